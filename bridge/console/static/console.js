// The console's only script: times in the browser's zone, and pages that refresh themselves.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (!isNaN(at)) {
      el.textContent = at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
      el.title = el.getAttribute("datetime");
    }
  }
}

// A refresh must not take away what someone is reading or typing.
function busy() {
  const active = document.activeElement;
  return (
    document.hidden ||
    document.querySelector("details[open]") !== null ||
    (active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName)) ||
    (window.getSelection && String(window.getSelection()) !== "")
  );
}

async function refresh() {
  if (busy()) return;
  try {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok || response.redirected) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("main");
    const main = document.getElementById("main");
    if (!fresh || !main) return;
    const flash = main.querySelector(".flash");
    main.replaceChildren(...fresh.childNodes);
    if (flash && !main.querySelector(".flash")) main.prepend(flash);
    localTimes(main);
    const stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = "Refreshed " + new Date().toLocaleTimeString() + ".";
  } catch (e) {
    const stamp = document.getElementById("refreshed");
    if (stamp) stamp.textContent = "Could not refresh: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const every = Number(document.body.dataset.refresh || 0);
  if (every > 0) setInterval(refresh, every * 1000);
});
