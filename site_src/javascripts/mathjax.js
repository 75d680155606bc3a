// MathJax only where formulas are: the 1 MB script is loaded by pages that contain an
// .arithmatex element, from the site's own files (relative to this script, so it works
// from file:// and under any sub-path).
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" }
};
(function () {
  var here = document.currentScript && document.currentScript.src;
  function load() {
    if (!here || !document.querySelector(".arithmatex") || document.getElementById("mathjax-script")) return;
    var s = document.createElement("script");
    s.id = "mathjax-script";
    s.async = true;
    s.src = new URL("../assets/mathjax/tex-mml-chtml.js", here).href;
    document.head.appendChild(s);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", load);
  else load();
})();
