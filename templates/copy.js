// Copy buttons: <button data-copy="ID"> copies the value of the field with that id.
document.querySelectorAll("button[data-copy]").forEach(function (b) {
  b.addEventListener("click", function () {
    var el = document.getElementById(b.dataset.copy);
    el.select();
    (navigator.clipboard ? navigator.clipboard.writeText(el.value) : Promise.resolve(document.execCommand("copy")))
      .then(function () { b.textContent = "Copied"; });
  });
});
