// Identity admin: progressive enhancement only. Every form works without this file; it adds
// drag and drop onto file inputs, a "busy" note while the models run, and the verify form's
// mode switch. No framework, no build step.
"use strict";

function setupDropzone(zone) {
  const input = zone.querySelector("input[type=file]");
  if (!input) return;
  const form = zone.closest("form");
  ["dragenter", "dragover"].forEach((name) =>
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    })
  );
  ["dragleave", "drop"].forEach((name) =>
    zone.addEventListener(name, () => zone.classList.remove("over"))
  );
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer ? event.dataTransfer.files : null;
    if (!files || files.length === 0) return;
    // A FileList cannot be built directly; a DataTransfer can, and hands one to the input.
    const picked = new DataTransfer();
    const take = input.multiple ? files.length : 1;
    for (let i = 0; i < take; i += 1) picked.items.add(files[i]);
    input.files = picked.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    if (form && form.hasAttribute("data-autosubmit")) form.requestSubmit();
  });
}

function setupBusy(form) {
  const note = form.querySelector("[data-busy]");
  if (!note) return;
  form.addEventListener("submit", () => {
    note.hidden = false;
    form.querySelectorAll("button[type=submit]").forEach((b) => {
      // Disabled after the submit event has collected the form data, so nothing is lost.
      setTimeout(() => { b.disabled = true; }, 0);
    });
  });
}

function setupVerify(form) {
  const radios = form.querySelectorAll("input[name=mode]");
  const apply = () => {
    const mode = form.querySelector("input[name=mode]:checked").value;
    form.querySelectorAll("[data-mode]").forEach((el) => {
      const on = el.getAttribute("data-mode") === mode;
      el.hidden = !on;
      el.querySelectorAll("input, select").forEach((field) => {
        field.required = on;
      });
    });
  };
  radios.forEach((r) => r.addEventListener("change", apply));
  apply();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-dropzone]").forEach(setupDropzone);
  document.querySelectorAll("form").forEach(setupBusy);
  document.querySelectorAll("form[data-verify]").forEach(setupVerify);
});
