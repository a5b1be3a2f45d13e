// Drives headless Chromium (WebGPU on SwiftShader) through the demo page in test mode and checks that
// the browser's answer token ids equal the expected ones (the native CPU run's, or the reference
// pipeline's). With CACHED_URL, then opens that page in the same browser profile and checks that
// every file of the system came from the browser cache.
// usage: node web/drive.js URL EXPECTED_JSON SCREENSHOT_PNG [CACHED_URL]
const { chromium } = require("playwright-core");
const fs = require("fs");

async function visit(page, url) {
  await page.goto(url);
  await page.waitForFunction(() => document.title === "DONE", null, { timeout: 20 * 60 * 1000, polling: 500 });
  const result = JSON.parse(await page.textContent("#out"));
  if (!result.ok) throw new Error(`the page reported an error: ${result.error}`);
  return result;
}

(async () => {
  const [url, expectedFile, screenshot, cachedUrl] = process.argv.slice(2);
  const expected = JSON.parse(fs.readFileSync(expectedFile, "utf8")).token_ids;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--enable-unsafe-webgpu", "--disable-dev-shm-usage", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => console.log(`[console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`[pageerror] ${e}`));
  const result = await visit(page, url);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`browser : ${JSON.stringify(result)}`);
  console.log(`expected: ${JSON.stringify(expected)}`);
  const same = result.token_ids.length === expected.length && result.token_ids.every((id, i) => id === expected[i]);
  if (!same) throw new Error("the browser's token ids differ from the expected ones");
  console.log(`OK: ${expected.length} token ids identical; screenshot ${screenshot}`);
  if (cachedUrl) {
    const again = await visit(page, cachedUrl);
    console.log(`reload  : ${JSON.stringify(again)}`);
    if (!(again.files > 0 && again.cached === again.files)) throw new Error(`expected every file from the browser cache, got ${again.cached} of ${again.files}`);
    console.log(`OK: all ${again.files} files came from the browser cache`);
  }
  await browser.close();
})().catch((e) => {
  console.error(`FAIL: ${e.message ?? e}`);
  process.exit(1);
});
