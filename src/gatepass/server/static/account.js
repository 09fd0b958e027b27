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
})();
