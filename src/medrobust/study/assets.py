"""The study page's script and style sheet, served by :mod:`medrobust.study.app` from ``/static/`` (no CDN).

Plain JavaScript (no framework): one item at a time; answers posted as JSON with the session's CSRF token;
keyboard shortcuts A/B (2AFC: altered strip), O/X (single strip: original/altered), Y/N (same class), 1-5
(confidence), Enter (submit; Ctrl+Enter inside the comment box; in an ``--allow-change`` study, Enter on an
unchanged saved answer moves to the next item).
"""

STUDY_JS = r"""// medrobust study page: one item at a time, answers posted as JSON with the session's CSRF token.
(function () {
  "use strict";
  var token = location.pathname.split("/")[2];
  var csrf = document.querySelector("meta[name=csrf-token]").content;
  var design = document.querySelector("meta[name=design]").content;
  var $ = function (id) { return document.getElementById(id); };
  var state = null, pick = {}, busy = false;
  var keys = {a: ["choice", "left"], b: ["choice", "right"], o: ["choice", "real"], x: ["choice", "altered"],
              y: ["same", "true"], n: ["same", "false"],
              "1": ["conf", "1"], "2": ["conf", "2"], "3": ["conf", "3"], "4": ["conf", "4"], "5": ["conf", "5"]};

  function complete() {
    var needChoice = design !== "sameclass", needSame = design !== "single";
    return (!needChoice || pick.choice) && (!needSame || pick.same);
  }

  function mark() {
    ["choice", "same", "conf"].forEach(function (q) {
      document.querySelectorAll("[data-" + q + "]").forEach(function (b) {
        b.setAttribute("aria-pressed", String(b.getAttribute("data-" + q) === pick[q]));
      });
    });
    $("submit").disabled = busy || !complete();
  }

  function choose(q, v) {
    if (design === "2afc" && q === "choice" && v !== "left" && v !== "right") { return; }
    if (design === "single" && q === "choice" && v !== "real" && v !== "altered") { return; }
    if (document.querySelector("[data-" + q + "='" + v + "']") === null) { return; }
    pick[q] = v;
    mark();
  }

  function render(s) {
    state = s;
    $("progress").textContent = s.answered + " of " + s.total + " answered";
    $("bar").style.width = (s.total ? 100 * s.answered / s.total : 0) + "%";
    if (s.done) {
      $("item").hidden = true;
      $("done").hidden = false;
      document.body.setAttribute("data-done", "true");
      return;
    }
    var it = s.item, box = $("strips"), sv = it.saved;
    pick = {};
    if (sv) {
      if (sv.choice) { pick.choice = sv.choice; }
      if (sv.same_class !== null) { pick.same = String(sv.same_class); }
      if (sv.confidence) { pick.conf = String(sv.confidence); }
    }
    $("comment").value = sv ? sv.comment : "";
    $("error").textContent = "";
    $("next").hidden = !sv;
    $("saved").textContent = sv ? "Saved. Change it and submit again, or go to the next item." : "";
    $("caption").textContent = "Item " + (it.position + 1) + " of " + s.total + ": lead " + it.lead + ", " +
      it.seconds.toFixed(2) + " s. " + it.axis_note + ".";
    box.textContent = "";
    it.strips.forEach(function (st, i) {
      var fig = document.createElement("figure"), cap = document.createElement("figcaption");
      var img = document.createElement("img");
      cap.textContent = it.strips.length > 1 ? (i === 0 ? "Strip A (top)" : "Strip B (bottom)") : "Strip";
      img.src = st.src;
      img.alt = cap.textContent;
      fig.appendChild(cap);
      fig.appendChild(img);
      box.appendChild(fig);
    });
    $("item").hidden = false;
    $("item").setAttribute("data-position", String(it.position));
    $("item").setAttribute("data-saved", sv ? [sv.choice, sv.same_class, sv.confidence].join(",") : "");
    mark();
  }

  function unchanged() {
    var sv = state && state.item && state.item.saved;
    if (!sv) { return false; }
    var same = sv.same_class === null ? null : String(sv.same_class);
    var conf = sv.confidence === null ? null : String(sv.confidence);
    return (pick.choice || null) === sv.choice && (pick.same || null) === same && (pick.conf || null) === conf &&
      $("comment").value === sv.comment;
  }

  function post(path, body) {
    busy = true;
    mark();
    return fetch("/api/r/" + token + path, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body)
    }).then(function (r) { return r.json().then(function (j) { return [r, j]; }); })
      .then(function (rj) {
        if (rj[0].ok) { busy = false; render(rj[1].state); } else { fail(rj[1].detail || "error"); }
      }).catch(function () { fail("the answer was not confirmed; reload the page (a stored answer is kept)."); });
  }

  function goNext() {
    if (busy || !state || state.done || !state.item.saved) { return; }
    post("/next", {position: state.item.position});
  }

  function fail(msg) { $("error").textContent = msg; busy = false; mark(); }

  function load() {
    fetch("/api/r/" + token + "/state", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.json().then(function (j) { return [r, j]; }); })
      .then(function (rj) { if (rj[0].ok) { render(rj[1]); } else { fail(rj[1].detail || "error"); } })
      .catch(function () { fail("the server did not answer; reload the page."); });
  }

  function submit() {
    if (busy || !state || state.done || !complete()) { return; }
    if (unchanged()) { goNext(); return; }
    var body = {position: state.item.position, comment: $("comment").value};
    if (pick.choice) { body.choice = pick.choice; }
    if (pick.same) { body.same_class = pick.same === "true"; }
    if (pick.conf) { body.confidence = Number(pick.conf); }
    post("/answer", body);
  }

  document.addEventListener("click", function (e) {
    var b = e.target.closest("button");
    if (!b || b.id === "next") { return; }
    ["choice", "same", "conf"].forEach(function (q) {
      if (b.hasAttribute("data-" + q)) { choose(q, b.getAttribute("data-" + q)); }
    });
  });
  $("answer").addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  $("next").addEventListener("click", function () { goNext(); });
  document.addEventListener("keydown", function (e) {
    if (e.target.tagName === "TEXTAREA") {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key === "Enter") { e.preventDefault(); submit(); return; }
    var k = keys[e.key.toLowerCase()];
    if (k) { e.preventDefault(); choose(k[0], k[1]); }
  });
  load();
}());
"""

STUDY_CSS = r"""body { font: 15px/1.4 system-ui, sans-serif; margin: 1em auto; max-width: 1120px; color: #222; }
.bar { background: #eee; height: 8px; border-radius: 4px; overflow: hidden; }
#bar { background: #3a7bd5; height: 100%; width: 0; }
figure { margin: 0.5em 0; }
figcaption { font-weight: bold; }
img { display: block; max-width: 100%; border: 1px solid #ddd; }
fieldset { display: inline-block; border: 1px solid #ccc; margin: 0.3em 0.5em 0.3em 0; }
button[aria-pressed="true"] { background: #3a7bd5; color: white; }
kbd { font-size: 0.8em; border: 1px solid #aaa; border-radius: 3px; padding: 0 3px; }
textarea { width: 100%; }
#error { color: #b00; margin-left: 1em; }
"""
