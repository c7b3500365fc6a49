// The dashboard: polls this node's JSON and redraws; no library, no network beyond this node.
"use strict";

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function drawMembers(view) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const m of view.members) {
    const tr = document.createElement("tr");
    tr.dataset.name = m.name;
    tr.append(
      cell(m.name + (m.name === view.leader ? " (leader)" : ""), m.name === view.leader ? "leader" : ""),
      cell(`${m.host}:${m.port}`),
      cell(m.status, m.status),
      cell(String(m.incarnation)),
    );
    body.append(tr);
  }
}

async function tick() {
  const status = document.getElementById("status");
  try {
    drawMembers(await getJSON("/api/members"));
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "";
  } catch (e) {
    status.textContent = `cannot reach this node: ${e.message}`;
    status.className = "down";
  }
}

tick();
setInterval(tick, 1000);
