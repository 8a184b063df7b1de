// The browser of Loom's browser tests: the system chromium, driven by playwright-core from this
// folder's node_modules. `launchChromium()` resolves to a headless browser, or to null with
// `skipReason` saying what is missing (the tests then skip).
import fs from 'node:fs';

const CHROMIUM = '/usr/bin/chromium';

export let skipReason = null;
let chromium = null;
if (!fs.existsSync(CHROMIUM)) {
  skipReason = `${CHROMIUM} not found; install chromium to run the browser tests`;
} else {
  try {
    ({ chromium } = await import('./node_modules/playwright-core/index.mjs'));
  } catch (e) {
    skipReason = `playwright-core is not installed (npm ci --prefix tests/js): ${e.message}`;
  }
}

export async function launchChromium() {
  return chromium ? chromium.launch({ executablePath: CHROMIUM, headless: true }) : null;
}
