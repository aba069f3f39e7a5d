// The search page: text or image queries -> a grid of products; a product -> details, predictions, neighbours.
"use strict";
const $ = (id) => document.getElementById(id);
const status = (text, isError = false) => { $("status").textContent = text; $("status").className = isError ? "error" : ""; };

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function card(result) {
  const node = element("button", "card");
  node.type = "button";
  node.dataset.productId = result.product_id;
  const image = element("img");
  image.loading = "lazy";
  image.alt = result.title;
  image.src = `/api/products/${encodeURIComponent(result.product_id)}/thumbnail`;
  image.onerror = () => { image.style.visibility = "hidden"; };
  const text = element("div", "text");
  text.append(element("span", "title", result.title), element("span", "category", result.category || "uncategorized"),
              element("span", "score", `score ${result.score.toFixed(3)}`));
  node.append(image, text);
  node.addEventListener("click", () => showProduct(result.product_id));
  return node;
}

function render(container, results) {
  container.replaceChildren(...results.map(card));
}

async function searchText(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  const params = new URLSearchParams({ q: query, k: "24" });
  if ($("category").value) params.set("category", $("category").value);
  status("Searching…");
  try {
    const body = await api(`/api/search?${params}`);
    render($("results"), body.results);
    status(`${body.results.length} products for “${body.query}”`);
  } catch (error) { status(error.message, true); }
}

async function searchImage(file) {
  const form = new FormData();
  form.append("image", file);
  form.append("k", "24");
  if ($("category").value) form.append("category", $("category").value);
  const text = $("query").value.trim();
  if (text) form.append("text", text);
  status("Searching by image…");
  try {
    const body = await api(text ? "/api/search/combined" : "/api/search/image", { method: "POST", body: form });
    render($("results"), body.results);
    status(`${body.results.length} products like ${file.name}${text ? ` + “${text}”` : ""}`);
  } catch (error) { status(error.message, true); }
}

function definitionList(entries) {
  const list = element("dl");
  for (const [term, value] of entries) {
    if (value === undefined || value === null || value === "") continue;
    list.append(element("dt", null, term), element("dd", null, String(value)));
  }
  return list;
}

async function showProduct(productId) {
  const id = encodeURIComponent(productId);
  $("details-body").replaceChildren(element("p", null, "Loading…"));
  $("similar").replaceChildren();
  if (!$("details").open) $("details").showModal();
  try {
    const [product, similar] = await Promise.all([api(`/api/products/${id}`), api(`/api/products/${id}/similar?k=12`)]);
    const layout = element("div", "product");
    const image = element("img");
    image.src = product.thumbnail;
    image.alt = product.title;
    const info = element("div");
    const attributes = Object.entries(product.attributes || {});
    info.append(element("h2", null, product.title),
      definitionList([["product id", product.product_id], ["category", product.category], ["brand", product.brand],
                      ["price", product.price], ...attributes]));
    const prediction = product.prediction;
    info.append(element("h3", null, `Predicted category (${prediction.method})`));
    for (const { label, score } of prediction.category.slice(0, 3)) {
      const row = element("div", "prediction", `${label} · ${score.toFixed(3)}`);
      const bar = element("div", "bar");
      const fill = element("i");
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      bar.append(fill);
      row.append(bar);
      info.append(row);
    }
    const predicted = Object.entries(prediction.attributes || {}).map(([name, labels]) => [name, labels[0]?.label]);
    if (predicted.length) info.append(element("h3", null, "Predicted attributes"), definitionList(predicted));
    if (prediction.adult) info.append(definitionList([["adult score", prediction.adult.score.toFixed(3)]]));
    layout.append(image, info);
    $("details-body").replaceChildren(layout);
    render($("similar"), similar.results);
  } catch (error) { $("details-body").replaceChildren(element("p", "error", error.message)); }
}

async function loadCategories() {
  try {
    const { categories } = await api("/api/categories");
    for (const path of categories) {
      const option = element("option", null, path);
      option.value = path;
      $("category").append(option);
    }
  } catch (error) { status(error.message, true); }
}

function setUpDropZone() {
  const zone = $("drop-zone");
  const input = $("image-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") input.click(); });
  input.addEventListener("change", () => { if (input.files[0]) searchImage(input.files[0]); });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files[0]) searchImage(event.dataTransfer.files[0]);
  });
}

$("search-form").addEventListener("submit", searchText);
$("close-details").addEventListener("click", () => $("details").close());
setUpDropZone();
loadCategories();
