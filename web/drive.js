// Drives headless Chromium (WebGPU on SwiftShader) through the demo page in test mode and checks that
// the browser's answer token ids equal the native CPU run's.
// usage: node web/drive.js URL EXPECTED_JSON SCREENSHOT_PNG
const { chromium } = require("playwright-core");
const fs = require("fs");

(async () => {
  const [url, expectedFile, screenshot] = process.argv.slice(2);
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
  await page.goto(url);
  await page.waitForFunction(() => document.title === "DONE", null, { timeout: 20 * 60 * 1000, polling: 500 });
  const result = JSON.parse(await page.textContent("#out"));
  await page.screenshot({ path: screenshot, fullPage: true });
  await browser.close();
  console.log(`browser: ${JSON.stringify(result)}`);
  console.log(`native : ${JSON.stringify(expected)}`);
  if (!result.ok) throw new Error(`the page reported an error: ${result.error}`);
  const same = result.token_ids.length === expected.length && result.token_ids.every((id, i) => id === expected[i]);
  if (!same) throw new Error("token ids differ between the browser (WebGPU) and the native CPU run");
  console.log(`OK: ${expected.length} token ids identical; screenshot ${screenshot}`);
})().catch((e) => {
  console.error(`FAIL: ${e.message ?? e}`);
  process.exit(1);
});
