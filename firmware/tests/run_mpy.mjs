// Run test scripts under real MicroPython (the WebAssembly port from npm).
//
// usage: node run_mpy.mjs SCRIPT.py [SCRIPT.py ...]
//
// Each script gets a fresh interpreter whose filesystem holds the firmware package
// (firmware/mimamori_sensor -> /lib/mimamori_sensor) and the fake hardware modules
// (firmware/tests/fakes -> /lib), and firmware/main.py as /firmware/main.py (not on the
// import path: a script imports it on purpose). Everything a script prints is passed through; the
// runner adds one line per script, `@@RESULT {"script": ..., "ok": ..., "error": ...}`,
// and exits non-zero if any script raised.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const here = dirname(fileURLToPath(import.meta.url));
const firmware = dirname(here);

function copyTree(FS, src, dst) {
  try { FS.mkdir(dst); } catch { /* exists */ }
  for (const name of readdirSync(src)) {
    const path = join(src, name);
    if (statSync(path).isDirectory()) {
      if (name !== "__pycache__") copyTree(FS, path, `${dst}/${name}`);
    } else if (name.endsWith(".py")) {
      FS.writeFile(`${dst}/${name}`, readFileSync(path));
    }
  }
}

let failed = 0;
for (const script of process.argv.slice(2)) {
  const mp = await loadMicroPython({
    // A board has ~100-300 KiB of heap; 512 KiB keeps tests honest about memory.
    heapsize: 512 * 1024,
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stdout.write(line + "\n"),
  });
  copyTree(mp.FS, join(here, "fakes"), "/lib");
  copyTree(mp.FS, join(firmware, "mimamori_sensor"), "/lib/mimamori_sensor");
  mp.FS.mkdir("/flash");
  mp.FS.mkdir("/firmware");
  mp.FS.writeFile("/firmware/main.py", readFileSync(join(firmware, "main.py")));
  const result = { script: basename(script), ok: true, error: "" };
  try {
    mp.runPython(readFileSync(script, "utf8"));
  } catch (err) {
    result.ok = false;
    result.error = String(err.message || err);
    failed += 1;
  }
  process.stdout.write("@@RESULT " + JSON.stringify(result) + "\n");
}
process.exit(failed ? 1 : 0);
