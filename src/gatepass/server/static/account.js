"use strict";
// Calls the JSON API with the session's CSRF token; no framework, no inline script.
(function () {
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");

  async function call(method, path, body) {
    const options = { method, headers: { "X-CSRF-Token": token }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      status.textContent = detail;
      status.className = "error";
    }
    return response;
  }

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

  function done(message) {
    status.textContent = message;
    status.className = "ok";
  }

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
})();
