// Passkeys (WebAuthn), browser side. Every <form class="webauthn" data-webauthn="PURPOSE">
// stays hidden unless this browser has WebAuthn; submitting it fetches fresh options from
// /webauthn/options?for=PURPOSE, runs navigator.credentials.create (register) or .get (login,
// factor, confirm), puts the answer base64url-encoded into the form's hidden fields and posts
// the form. The server checks everything; this script only carries bytes.
(function () {
  "use strict";
  // The options live beside /static/ under the issuer's path (an issuer such as
  // https://example.com/auth serves everything under /auth).
  var script = document.currentScript;
  var optionsPath = script && script.src ? new URL("../webauthn/options", script.src).pathname : "/webauthn/options";
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  function toBytes(s) { // base64url -> ArrayBuffer
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function toB64(buf) { // ArrayBuffer -> base64url
    if (!buf) { return ""; }
    var b = new Uint8Array(buf), s = "";
    for (var i = 0; i < b.length; i++) { s += String.fromCharCode(b[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeList(list) {
    return (list || []).map(function (c) { return { type: c.type, id: toBytes(c.id) }; });
  }

  function set(form, name, value) {
    var el = form.querySelector('input[name="' + name + '"]');
    if (el) { el.value = value; }
  }

  function showError(form, msg) {
    var el = form.querySelector(".webauthn-error");
    if (el) { el.textContent = msg; el.hidden = false; }
  }

  function run(form) {
    var purpose = form.dataset.webauthn;
    var url = optionsPath + "?for=" + encodeURIComponent(purpose);
    var next = form.querySelector('input[name="next"]');
    if (next && next.value) { url += "&next=" + encodeURIComponent(next.value); }
    if (form.dataset.exclude) { url += "&exclude=" + encodeURIComponent(form.dataset.exclude); }
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (body) {
        if (!resp.ok) { throw new Error(body.error_description || "The server refused the request."); }
        return body.publicKey;
      });
    }).then(function (pk) {
      pk.challenge = toBytes(pk.challenge);
      if (purpose === "register") {
        pk.user.id = toBytes(pk.user.id);
        pk.excludeCredentials = decodeList(pk.excludeCredentials);
        return navigator.credentials.create({ publicKey: pk }).then(function (cred) {
          set(form, "client_data", toB64(cred.response.clientDataJSON));
          set(form, "attestation_object", toB64(cred.response.attestationObject));
        });
      }
      pk.allowCredentials = decodeList(pk.allowCredentials);
      return navigator.credentials.get({ publicKey: pk }).then(function (cred) {
        set(form, "credential_id", toB64(cred.rawId));
        set(form, "client_data", toB64(cred.response.clientDataJSON));
        set(form, "authenticator_data", toB64(cred.response.authenticatorData));
        set(form, "signature", toB64(cred.response.signature));
        set(form, "user_handle", toB64(cred.response.userHandle));
      });
    });
  }

  document.querySelectorAll("form.webauthn").forEach(function (form) {
    form.hidden = false;
    var busy = false;
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      if (busy) { return; }
      busy = true;
      run(form).then(function () {
        form.submit();
      }, function (err) {
        busy = false;
        var msg = err && err.name === "NotAllowedError" ? "The passkey request was cancelled or timed out." :
          err && err.name === "InvalidStateError" ? "This passkey is already registered." :
          (err && err.message) || "The passkey did not work.";
        showError(form, msg);
      });
    });
  });
})();
