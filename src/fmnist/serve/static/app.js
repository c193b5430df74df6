// fmnist web app: upload (button, drag-and-drop, paste), gallery, model card.
// Plain JavaScript, no dependencies; every text from the server goes in via textContent.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const drop = $("#drop");
  const input = $("#file-input");
  const results = $("#results");
  const template = $("#result-template");
  const gallery = $("#gallery");
  const limits = { max_upload_bytes: 10 * 1024 * 1024, max_files: 16 };
  let pasted = 0;

  const pct = (p) => (p >= 0.9995 ? "100%" : p < 0.0005 ? "<0.1%" : `${(100 * p).toFixed(1)}%`);
  const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(bytes < 1024 * 1024 ? 2 : 1)} MB`;

  // ---------------------------------------------------------------- model card

  async function loadModel() {
    const card = $("#model-card");
    try {
      const res = await fetch("/api/model");
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const m = await res.json();
      Object.assign(limits, m.limits || {});
      limits.classes = (m.classes || []).length || limits.classes;
      const acc = typeof m.test_accuracy === "number" ? pct(m.test_accuracy) : "not evaluated";
      const rows = [
        ["Model", m.arch || "?"],
        ["Recipe", m.recipe || "?"],
        ["Parameters", typeof m.params === "number" ? m.params.toLocaleString("en-US") : "?"],
        ["Test accuracy", acc],
        ["Trained", m.created ? formatDate(m.created) : "?"],
        ["Dataset", m.dataset || "?"],
        ["Backend", [m.backend, m.device, m.precision].filter(Boolean).join(" · ")],
      ];
      card.replaceChildren(...rows.map(([k, v]) => {
        const div = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = k;
        dd.textContent = v;
        div.append(dt, dd);
        return div;
      }));
      $("#model-classes").replaceChildren(...(m.classes || []).map((c) => {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.textContent = c;
        return chip;
      }));
      $("#model-badge").textContent = `${m.arch || "model"} · ${acc} test accuracy`;
    } catch (err) {
      card.replaceChildren(Object.assign(document.createElement("p"), {
        className: "error", textContent: `Could not load the model card (${err.message}).`,
      }));
      $("#model-badge").textContent = "model unavailable";
    }
  }

  function formatDate(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit" });
  }

  // ---------------------------------------------------------------- result cards

  // A new card goes before `anchor` (the newest earlier card): batches stay in order.
  function newCard(name, previewUrl, truth, anchor) {
    const li = template.content.firstElementChild.cloneNode(true);
    li.querySelector(".file-name").textContent = name;
    li.querySelector(".file-name").title = name;
    const original = li.querySelector(".original");
    original.addEventListener("error", () => {
      original.hidden = true;
      li.querySelector(".no-preview").hidden = false;
    }, { once: true });
    original.src = previewUrl;
    original.alt = `Your image ${name}`;
    if (truth) li.dataset.truth = truth;
    li.dataset.source = truth ? "gallery" : "upload";
    results.insertBefore(li, anchor);
    $(".results-head").hidden = false;
    $("#empty").hidden = true;
    return li;
  }

  function showError(li, message) {
    li.dataset.state = "error";
    li.querySelector(".top-class").textContent = "Could not classify";
    li.querySelector(".top-prob").textContent = "";
    const p = li.querySelector(".error");
    p.textContent = message;
    p.hidden = false;
  }

  function showResult(li, r) {
    if (r.error) {
      showError(li, r.error);
      return;
    }
    li.dataset.state = "done";
    li.querySelector(".seen-placeholder").hidden = true;
    const best = r.predictions[0];
    li.querySelector(".top-class").textContent = best.class;
    li.querySelector(".top-prob").textContent = pct(best.probability);
    // honest answers: an input unlike the training data, or a low calibrated probability,
    // is said so above the best guesses (which stay: top class and the bars below)
    const honest = r.in_distribution === false
      ? `Doesn't look like any of the ${limits.classes || "known"} classes. Best guesses:`
      : r.unsure ? "Not sure. Best guesses:" : "";
    if (honest) {
      const note = document.createElement("p");
      note.className = "honest-note";
      note.textContent = honest;
      li.querySelector(".verdict").before(note);
      li.dataset.honest = r.in_distribution === false ? "ood" : "unsure";
    }
    li.querySelector(".time").textContent = `${r.ms.toFixed(1)} ms`;
    li.dataset.predicted = best.class;
    if (r.image) {
      const seen = li.querySelector(".seen");
      seen.src = `data:image/png;base64,${r.image}`;
      seen.hidden = false;
    }
    const truth = li.dataset.truth;
    if (truth) {
      const t = li.querySelector(".truth");
      const right = truth === best.class;
      t.textContent = right ? `✓ Correct: true class is ${truth}`
        : `✗ Wrong: true class is ${truth}`;
      t.className = `truth ${right ? "right" : "wrong"}`;
      t.hidden = false;
    }
    const bars = li.querySelector(".bars");
    bars.setAttribute("aria-label", "Top classes");
    bars.replaceChildren(...r.predictions.map((p) => {
      const row = document.createElement("li");
      row.className = "bar-row";
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = p.class;
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("role", "img");
      track.setAttribute("aria-label", `${p.class}: ${pct(p.probability)}`);
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.display = "block";
      fill.style.width = "0";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = pct(p.probability);
      row.append(label, track, value);
      requestAnimationFrame(() => { fill.style.width = `${(100 * p.probability).toFixed(1)}%`; });
      return row;
    }));
  }

  // ---------------------------------------------------------------- prediction

  // items: [{blob, name, truth?}]; sent in requests of at most limits.max_files files.
  async function classify(items) {
    const queue = [];
    const anchor = results.firstElementChild;
    for (const item of items) {
      const li = newCard(item.name, URL.createObjectURL(item.blob), item.truth, anchor);
      if (item.blob.size > limits.max_upload_bytes) {
        showError(li, `${item.name}: ${mb(item.blob.size)} is more than the ` +
          `${mb(limits.max_upload_bytes)} upload limit; resize or recompress it.`);
        continue;
      }
      queue.push({ ...item, li });
    }
    // on a phone the gallery sits below the results: bring the new card into view
    if (items.length) results.firstElementChild.scrollIntoView({ block: "nearest", behavior: "smooth" });
    for (let i = 0; i < queue.length; i += limits.max_files) {
      await send(queue.slice(i, i + limits.max_files));
    }
  }

  async function send(batch) {
    if (!batch.length) return;
    const form = new FormData();
    for (const item of batch) form.append("files", item.blob, item.name);
    let body;
    try {
      const res = await fetch("/api/predict?include_image=true", { method: "POST", body: form });
      body = await res.json().catch(() => ({ detail: `HTTP ${res.status}` }));
      if (!res.ok && !Array.isArray(body.results)) throw new Error(body.detail || `HTTP ${res.status}`);
    } catch (err) {
      for (const item of batch) showError(item.li, `Request failed: ${err.message}`);
      return;
    }
    const list = Array.isArray(body) ? body : body.results;
    batch.forEach((item, k) => showResult(item.li, list[k]));
    for (const [k, item] of batch.entries()) {
      if (list[k] && list[k].image && !list[k].error) await showSimilar(item.li, list[k].image);
    }
  }

  // ------------------------------------------------------------ similar items

  // Asks for the training images nearest to the 28x28 the model saw; a server that has
  // no index (ONNX model, data not found) answers 503 and the row stays hidden.
  async function showSimilar(li, seenB64) {
    const form = new FormData();
    form.append("files", b64ToBlob(seenB64, "image/png"), "seen.png");
    let body;
    try {
      const res = await fetch("/api/similar?k=8", { method: "POST", body: form });
      if (!res.ok) return;
      body = await res.json();
    } catch (err) {
      return;
    }
    const items = (body[0] && body[0].similar) || [];
    if (!items.length) return;
    const row = li.querySelector(".similar-row");
    row.replaceChildren(...items.map((n) => {
      const fig = document.createElement("li");
      fig.className = "similar-item";
      const img = document.createElement("img");
      img.src = `data:image/png;base64,${n.image}`;
      img.alt = `${n.class} (training image ${n.index})`;
      img.title = `${n.class}, similarity ${n.similarity.toFixed(2)}`;
      const cap = document.createElement("span");
      cap.textContent = n.class;
      fig.append(img, cap);
      return fig;
    }));
    li.querySelector(".similar").hidden = false;
  }

  function filesFrom(fileList) {
    return Array.from(fileList || []).map((f) => {
      let name = f.name;
      if (!name || name === "image.png") name = `pasted-${++pasted}.${(f.type.split("/")[1] || "png")}`;
      return { blob: f, name };
    });
  }

  // ---------------------------------------------------------------- inputs

  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  input.addEventListener("change", () => {
    const items = filesFrom(input.files);
    input.value = "";
    if (items.length) classify(items);
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const items = filesFrom(e.dataTransfer && e.dataTransfer.files);
    if (items.length) classify(items);
  });
  // Files dropped beside the zone must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  document.addEventListener("paste", (e) => {
    const data = e.clipboardData;
    if (!data) return;
    let files = Array.from(data.files || []);
    if (!files.length) {
      files = Array.from(data.items || [])
        .filter((it) => it.kind === "file").map((it) => it.getAsFile()).filter(Boolean);
    }
    if (files.length) {
      e.preventDefault();
      classify(filesFrom(files));
    }
  });
  $("#clear").addEventListener("click", () => {
    for (const img of results.querySelectorAll("img.original")) URL.revokeObjectURL(img.src);
    results.replaceChildren();
    $(".results-head").hidden = true;
    $("#empty").hidden = false;
    drop.focus();
  });

  // ---------------------------------------------------------------- gallery

  function b64ToBlob(b64, type) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return new Blob([bytes], { type });
  }

  async function loadGallery() {
    gallery.classList.add("loading");
    const note = $("#gallery-note");
    try {
      const res = await fetch("/api/gallery?n=12");
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const g = await res.json();
      if (!g.available) {
        gallery.replaceChildren();
        note.textContent = g.note || "No test images available.";
        note.hidden = false;
        $("#shuffle").hidden = true;
        return;
      }
      note.hidden = true;
      gallery.replaceChildren(...g.items.map((item) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "gallery-item";
        b.dataset.label = item.label;
        b.setAttribute("aria-label", `Classify test image ${item.index} (a ${item.label})`);
        const img = document.createElement("img");
        img.src = `data:image/png;base64,${item.image}`;
        img.alt = "";
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = item.label;
        b.append(img, label);
        b.addEventListener("click", () => {
          classify([{ blob: b64ToBlob(item.image, "image/png"), name: `test-${item.index}.png`,
            truth: item.label }]);
        });
        return b;
      }));
    } catch (err) {
      note.textContent = `Could not load the gallery (${err.message}).`;
      note.hidden = false;
    } finally {
      gallery.classList.remove("loading");
    }
  }
  $("#shuffle").addEventListener("click", loadGallery);

  loadModel();
  loadGallery();
})();
