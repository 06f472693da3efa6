// The footer says when the server is archiving finished runs: the first answers over a
// root of many runs never archived are slow until it is done.
import { api } from "./common.js";

const note = document.getElementById("archive-state");

async function look() {
  try {
    const { archive } = await api("/api/status");
    if (archive.running) {
      note.textContent = "· archiving finished runs in the background (pages are slower until it is done)";
      setTimeout(look, 3000);
    } else {
      note.textContent = archive.failure ? `· not archiving: ${archive.failure}` : "";
    }
  } catch {
    note.textContent = "";
  }
}
look();
