"use strict";
// Calls the JSON API with the session's CSRF token; no framework, no inline script.
(function () {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");

  function send(method, path, body) {
    const options = { method, headers: { "X-CSRF-Token": token }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options);
  }

  async function problemOf(response) {
    try { return await response.clone().json(); } catch (e) { return {}; /* not JSON */ }
  }

  function fail(message) {
    status.textContent = message;
    status.className = "error";
  }

  async function report(response) {
    if (!response.ok) fail((await problemOf(response)).detail || response.statusText);
    return response;
  }

  async function call(method, path, body) {
    return report(await send(method, path, body));
  }

  // Changing factors and passkeys needs a recent sign-in: on 403
  // reauthentication_required the password form shows, and once the password is
  // confirmed (POST /auth/reauthenticate keeps the session) the request runs again.
  const reauthForm = document.getElementById("reauth-form");
  let reauthDone = null;

  function confirmPassword() {
    if (reauthDone) reauthDone(false);
    reauthForm.hidden = false;
    reauthForm.current_password.focus();
    status.textContent = "Confirm your password to continue.";
    status.className = "";
    return new Promise((resolve) => { reauthDone = resolve; });
  }

  function closeReauth(confirmed) {
    reauthForm.reset();
    reauthForm.hidden = true;
    const resolve = reauthDone;
    reauthDone = null;
    if (resolve) resolve(confirmed);
  }

  if (reauthForm) {
    reauthForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const response = await call("POST", "/auth/reauthenticate", {
        current_password: reauthForm.current_password.value,
      });
      if (response.status === 204) {
        status.textContent = "";
        closeReauth(true);
      } else {
        reauthForm.current_password.value = "";
      }
    });
    document.getElementById("reauth-cancel").addEventListener("click", () => {
      closeReauth(false);
      status.textContent = "";
    });
  }

  async function fresh(method, path, body) {
    const response = await send(method, path, body);
    if (response.status === 403 && (await problemOf(response)).code === "reauthentication_required") {
      if (await confirmPassword()) return call(method, path, body);
      return response;
    }
    return report(response);
  }

  function done(message) {
    status.textContent = message;
    status.className = "ok";
  }

  // For passkeys.js, loaded after this file on the same page.
  window.gatepassAccount = { call, fresh, done, fail };

  document.querySelectorAll("button.end-session").forEach((button) => {
    button.addEventListener("click", async () => {
      const id = button.dataset.session;
      const response = await call("DELETE", "/auth/sessions/" + encodeURIComponent(id));
      if (response.status === 204) {
        document.querySelector('tr[data-session="' + CSS.escape(id) + '"]').remove();
        status.textContent = "Session ended.";
        status.className = "ok";
      }
    });
  });

  document.getElementById("logout").addEventListener("click", async () => {
    if ((await call("POST", "/auth/logout")).status === 204) window.location.assign("/login");
  });

  document.getElementById("logout-all").addEventListener("click", async () => {
    if ((await call("POST", "/auth/logout-all")).status === 204) window.location.assign("/login");
  });

  document.getElementById("password-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const response = await call("POST", "/auth/password", {
      current_password: form.current_password.value,
      new_password: form.new_password.value,
    });
    if (response.status === 204) window.location.reload();
  });

  const resend = document.getElementById("resend-verification");
  if (resend) {
    resend.addEventListener("click", async () => {
      const email = document.getElementById("account-email").textContent;
      if ((await call("POST", "/auth/email/resend", { email })).status === 202) {
        done("We sent a new verification link to " + email + ".");
      }
    });
  }

  document.getElementById("email-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const newEmail = form.new_email.value;
    const response = await call("POST", "/auth/email/change", {
      new_email: newEmail,
      current_password: form.current_password.value,
    });
    if (response.status === 202) {
      form.reset();
      done("Check the inbox of " + newEmail + ": your address changes when you open the link we sent there.");
    }
  });

  document.getElementById("delete-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    if (!form.confirm.checked) return;
    const response = await call("DELETE", "/auth/account", {
      current_password: form.current_password.value,
    });
    if (response.status === 204) window.location.assign("/login");
  });

  // Two-factor authentication: TOTP set-up and removal, recovery codes.
  const recoveryBox = document.getElementById("recovery-codes");

  function showRecoveryCodes(codes) {
    const list = document.getElementById("recovery-code-list");
    list.replaceChildren(...codes.map((code) => {
      const item = document.createElement("li");
      const text = document.createElement("code");
      text.textContent = code;
      item.append(text);
      return item;
    }));
    recoveryBox.hidden = false;
  }

  document.getElementById("recovery-saved").addEventListener("click", () => {
    // The codes leave the page; the reloaded page shows the new state.
    document.getElementById("recovery-code-list").replaceChildren();
    window.location.reload();
  });

  function showQr(svgText) {
    // Our own segno output, parsed as SVG (never as HTML) and adopted into the page.
    const parsed = new DOMParser().parseFromString(svgText, "image/svg+xml");
    const svg = parsed.documentElement;
    const box = document.getElementById("totp-qr");
    if (svg.nodeName.toLowerCase() !== "svg") {
      box.textContent = "The QR code could not be shown: enter the key by hand.";
      return;
    }
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "QR code for your authenticator app");
    box.replaceChildren(document.importNode(svg, true));
  }

  const begin = document.getElementById("totp-begin");
  if (begin) {
    begin.addEventListener("click", async () => {
      const response = await fresh("POST", "/auth/mfa/totp/setup");
      if (response.status !== 200) return;
      const setup = await response.json();
      showQr(setup.qr_svg);
      document.getElementById("totp-secret").textContent = setup.secret;
      document.getElementById("totp-setup").hidden = false;
      begin.hidden = true;
      document.querySelector('#totp-confirm-form input[name="code"]').focus();
    });
    document.getElementById("totp-confirm-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const form = event.target;
      const response = await fresh("POST", "/auth/mfa/totp/confirm", { code: form.code.value.trim() });
      if (response.status === 422) fail("That code did not work: check the time on your device and try the next code.");
      if (response.status !== 200) return;
      document.getElementById("totp-setup").hidden = true;
      document.getElementById("totp-qr").replaceChildren();
      document.getElementById("totp-secret").textContent = "";
      document.getElementById("totp-status").textContent = "Your authenticator app is set up.";
      showRecoveryCodes((await response.json()).recovery_codes);
      done("Two-factor authentication is on. Save your recovery codes now.");
    });
  }

  const removeForm = document.getElementById("totp-remove-form");
  if (removeForm) {
    removeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const response = await fresh("DELETE", "/auth/mfa/totp", { code: removeForm.code.value.trim() });
      if (response.status === 422) fail("That code did not work.");
      if (response.status === 204) window.location.reload();
    });
    document.getElementById("recovery-regenerate").addEventListener("click", async () => {
      const response = await fresh("POST", "/auth/mfa/recovery-codes");
      if (response.status !== 200) return;
      showRecoveryCodes((await response.json()).recovery_codes);
      await refreshFactors();
      done("New recovery codes: the old ones no longer work. Save these now.");
    });
  }

  async function refreshFactors() {
    const response = await call("GET", "/auth/mfa");
    if (response.status !== 200) return;
    const left = document.getElementById("recovery-codes-left");
    if (left) left.textContent = String((await response.json()).recovery_codes_left);
  }
})();
