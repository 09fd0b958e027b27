"use strict";
// Passkeys (WebAuthn) on the sign-in, second-factor and account pages. The server
// sends options in the WebAuthn Level 3 JSON form and takes the credential's JSON
// form back (DESIGN §3.3); no framework, no inline script.
(function () {
  const supported = typeof window.PublicKeyCredential === "function";

  // --- JSON <-> WebAuthn objects, with a small fallback for browsers without the
  // Level 3 helpers (parse*OptionsFromJSON, toJSON).
  function fromB64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(base64 + "===".slice((base64.length + 3) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
  }

  function toB64url(buffer) {
    let raw = "";
    new Uint8Array(buffer).forEach((byte) => { raw += String.fromCharCode(byte); });
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withIds(list) {
    return (list || []).map((c) => Object.assign({}, c, { id: fromB64url(c.id) }));
  }

  function creationOptions(json) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: fromB64url(json.challenge),
      user: Object.assign({}, json.user, { id: fromB64url(json.user.id) }),
      excludeCredentials: withIds(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: fromB64url(json.challenge),
      allowCredentials: withIds(json.allowCredentials),
    });
  }

  function credentialJSON(credential) {
    if (typeof credential.toJSON === "function") return credential.toJSON();
    const r = credential.response;
    const response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) response.userHandle = toB64url(r.userHandle);
    }
    return {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  // --- HTTP for the pages without a session (sign-in, second factor): JSON with the
  // page's origin; these routes need no CSRF token (there is no session yet).
  async function postJSON(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
  }

  async function detailOf(response, fallback) {
    try { return (await response.json()).detail || fallback; } catch (e) { return fallback; }
  }

  function showError(element, message) {
    element.textContent = message;
    element.hidden = false;
  }

  // What the browser says when the person cancels or the authenticator refuses.
  function ceremonyMessage(error) {
    if (error && error.name === "NotAllowedError") return "The passkey was not used (cancelled or timed out).";
    if (error && error.name === "InvalidStateError") return "This passkey is registered already.";
    return "The passkey did not work in this browser.";
  }

  async function getAssertion(optionsResponse) {
    const options = requestOptions(await optionsResponse.json());
    return navigator.credentials.get({ publicKey: options });
  }

  // (a) /login: passwordless sign-in.
  const loginButton = document.getElementById("passkey-login");
  if (loginButton && supported) {
    const error = document.getElementById("passkey-error");
    loginButton.hidden = false;
    loginButton.addEventListener("click", async () => {
      error.hidden = true;
      loginButton.disabled = true;
      try {
        const options = await postJSON("/auth/passkeys/login/options");
        if (!options.ok) {
          showError(error, options.status === 429 ? "Too many attempts. Try again later." : await detailOf(options, "Passkey sign-in is not available."));
          return;
        }
        let credential;
        try {
          credential = await getAssertion(options);
        } catch (e) {
          showError(error, ceremonyMessage(e));
          return;
        }
        const signedIn = await postJSON("/auth/passkeys/login", { credential: credentialJSON(credential), client: "web" });
        if (signedIn.ok) {
          window.location.assign("/account");
          return;
        }
        showError(error, signedIn.status === 429 ? "Too many attempts. Try again later." : "That passkey did not sign you in.");
      } finally {
        loginButton.disabled = false;
      }
    });
  }

  // (b) The second step of a password sign-in: a passkey instead of a code.
  const mfaButton = document.getElementById("mfa-passkey");
  if (mfaButton) {
    const error = document.getElementById("mfa-passkey-error");
    if (!supported) {
      mfaButton.disabled = true;
      showError(error, "This browser does not support passkeys.");
    }
    mfaButton.addEventListener("click", async () => {
      const mfaToken = mfaButton.dataset.mfaToken;
      error.hidden = true;
      mfaButton.disabled = true;
      try {
        const options = await postJSON("/auth/mfa/webauthn/options", { mfa_token: mfaToken });
        if (options.status === 401) {
          showError(error, "This sign-in has expired: start again.");
          return;
        }
        if (!options.ok) {
          showError(error, await detailOf(options, "Passkeys are not available right now."));
          return;
        }
        let credential;
        try {
          credential = await getAssertion(options);
        } catch (e) {
          showError(error, ceremonyMessage(e));
          return;
        }
        const verified = await postJSON("/auth/mfa/verify", {
          mfa_token: mfaToken,
          method: "webauthn",
          credential: credentialJSON(credential),
        });
        if (verified.ok) {
          window.location.assign("/account");
          return;
        }
        if (verified.status === 429) showError(error, "Too many attempts. Try again later.");
        else showError(error, "That passkey did not work. Try again, or start again.");
      } finally {
        mfaButton.disabled = false;
      }
    });
  }

  // (c) /account: add, rename and remove passkeys (through account.js's helpers,
  // which carry the CSRF token and ask for the password when the sign-in is stale).
  const addForm = document.getElementById("passkey-add-form");
  const account = window.gatepassAccount;
  if (addForm && account) {
    if (!supported) {
      addForm.hidden = true;
      document.getElementById("passkeys-unsupported").hidden = false;
    }
    addForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = document.getElementById("add-passkey");
      button.disabled = true;
      try {
        const options = await account.fresh("POST", "/auth/passkeys/register/options");
        if (options.status !== 200) return;
        let credential;
        try {
          credential = await navigator.credentials.create({ publicKey: creationOptions(await options.json()) });
        } catch (e) {
          account.fail(ceremonyMessage(e));
          return;
        }
        const name = addForm.name.value.trim();
        const body = { credential: credentialJSON(credential) };
        if (name) body.name = name;
        const registered = await account.fresh("POST", "/auth/passkeys/register", body);
        if (registered.status === 201) window.location.reload();
      } finally {
        button.disabled = false;
      }
    });

    document.querySelectorAll("#passkeys li[data-passkey]").forEach((row) => {
      const path = "/auth/passkeys/" + encodeURIComponent(row.dataset.passkey);
      row.querySelector("button.rename-passkey").addEventListener("click", async () => {
        const input = row.querySelector("input.passkey-name");
        const response = await account.fresh("PATCH", path, { name: input.value });
        if (response.status === 200) {
          input.value = (await response.json()).name;
          account.done("Passkey renamed.");
        }
      });
      row.querySelector("button.remove-passkey").addEventListener("click", async () => {
        const response = await account.fresh("DELETE", path);
        if (response.status === 204) {
          row.remove();
          if (!document.querySelector("#passkeys li[data-passkey]")) {
            document.getElementById("no-passkeys").hidden = false;
          }
          account.done("Passkey removed.");
        }
      });
    });
  }
})();
