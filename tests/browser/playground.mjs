// Drives the playground in headless Chromium, as a person would:
//   node playground.mjs BASE_URL SCREENSHOT_DIR
// Exits non-zero (with the reason) on the first thing that does not work.
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node playground.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  // API error answers (a trap is a 422) are logged by Chromium as failed
  // loads; they are expected. Anything else on the console is a bug.
  page.on("console", (m) => {
    const text = m.text();
    const apiError = /Failed to load resource: the server responded with a status of 4\d\d/.test(text)
      && !/status of 404/.test(text);
    if (m.type() === "error" && !apiError) failures.push(`console error: ${text}`);
  });
  page.setDefaultTimeout(15000);

  await page.goto(base + "/", { waitUntil: "load" });

  // 1. The double example: the export picker is filled from the module.
  await page.locator("#function option[value=double]").waitFor({ state: "attached" });
  const signature = await page.locator("#function option[value=double]").textContent();
  if (!signature.includes("(i32) -> (i32)")) throw new Error(`export picker shows ${signature}`);
  await page.fill("#param-0", "2");
  await page.click("#run");
  await page.locator("#results td.value").waitFor();
  const value = await page.locator("#results td.value").textContent();
  const type = await page.locator("#results td.type").textContent();
  if (value !== "4" || type !== "i32") throw new Error(`double(2) showed ${value} : ${type}`);
  await page.screenshot({ path: `${shots}/playground.png` });

  // 2. Ctrl+Enter runs too.
  await page.fill("#param-0", "21");
  await page.locator("#param-0").press("Control+Enter");
  await page.locator("#results td.value", { hasText: "42" }).waitFor();

  // 3. Register the module and call it from the registry view.
  await page.fill("#register-name", "browser_double");
  await page.click("#register");
  await page.locator("#register-result .ok").waitFor();
  await page.locator("#modules button[data-module=browser_double]").click();
  await page.locator("#target", { hasText: "browser_double" }).waitFor();
  await page.locator("#param-0").waitFor();
  await page.fill("#param-0", "50");
  await page.click("#run");
  await page.locator("#results td.value", { hasText: "100" }).waitFor();

  // 4. An error is shown with its code: a trap.
  await page.click("#use-editor");
  await page.fill("#editor", '(module (func (export "boom") unreachable))');
  await page.locator("#function option[value=boom]").waitFor({ state: "attached" });
  await page.click("#run");
  await page.locator("#output .error", { hasText: "trap" }).waitFor();

  // 5. Uploading a .wasm file: the origin's double_twice binary, which
  //    imports utils.double, linked to a registered "utils".
  const twice = Buffer.from(
    "0061736d0100000001060160017f017f021001057574696c7306646f75626c650000030201000710010c646f75626c655f747769636500010a0a0108002000100010000b",
    "hex");
  await page.fill("#register-name", "utils");
  await page.selectOption("#example", { label: "double (the origin's example)" });
  await page.locator("#function option[value=double]").waitFor({ state: "attached" });
  await page.click("#register");
  await page.locator("#register-result .ok", { hasText: "utils" }).waitFor();
  await page.setInputFiles("#upload", { name: "double_twice.wasm", mimeType: "application/wasm", buffer: twice });
  await page.locator("#source-note", { hasText: "double_twice.wasm" }).waitFor();
  await page.locator("#function option[value=double_twice]").waitFor({ state: "attached" });
  await page.fill("#hosts", "utils");
  await page.fill("#param-0", "3");
  await page.click("#run");
  await page.locator("#results td.value", { hasText: "12" }).waitFor();

  // 6. The WASI example prints to stdout.
  await page.selectOption("#example", { label: "WASI hello world" });
  await page.locator("#function option[value=_start]").waitFor({ state: "attached" });
  await page.click("#run");
  await page.locator("#stdout", { hasText: "Hello from WASI!" }).waitFor();
  await page.screenshot({ path: `${shots}/playground-wasi.png` });

  // 7. An environment: a writer exposed as "shared", a reader that imports
  //    its memory; the writer's put(16, 42) is read back by the reader.
  await page.click("#env-new");
  await page.locator("#env-id", { hasText: "." }).waitFor();
  await page.selectOption("#example", { label: "environment: a writer that exposes its memory" });
  await page.locator("#function option[value=put]").waitFor({ state: "attached" });
  await page.click("#env-add");
  await page.locator("#env-result .ok", { hasText: "exposed as shared" }).waitFor();
  await page.selectOption("#example", { label: "environment: a reader of the shared memory" });
  await page.locator("#function option[value=get]").waitFor({ state: "attached" });
  await page.click("#env-add");
  await page.locator("#env-members button[data-member=reader]").waitFor();
  await page.locator("#env-members button[data-member=writer]").click();
  await page.locator("#target", { hasText: "writer" }).waitFor();
  if (await page.locator("#hosts-line").isVisible()) throw new Error("host modules shown for an environment's instance");
  await page.fill("#param-0", "16");
  await page.fill("#param-1", "42");
  await page.click("#run");
  await page.locator("#output .ok-head", { hasText: "Done" }).waitFor();
  await page.locator("#env-members button[data-member=reader]").click();
  await page.locator("#target", { hasText: "reader" }).waitFor();
  await page.fill("#param-0", "16");
  await page.click("#run");
  await page.locator("#results td.value", { hasText: "42" }).waitFor();
  await page.screenshot({ path: `${shots}/playground-environment.png` });

  // 8. A component: one input per WIT param, named as in WIT.
  await page.selectOption("#example", { label: "component: WIT-typed u64 and bool exports" });
  await page.locator("#function option[value=add]").waitFor({ state: "attached" });
  await page.locator("#params label", { hasText: "a:" }).waitFor();
  await page.locator("#params label", { hasText: "b:" }).waitFor();
  await page.fill("#param-0", "40");
  await page.fill("#param-1", "5");
  await page.click("#run");
  await page.locator("#results td.value", { hasText: "45" }).waitFor();
  await page.locator("#results td.type", { hasText: "u64" }).waitFor();
  await page.selectOption("#function", "is-even");
  await page.fill("#param-0", "10");
  await page.click("#run");
  await page.locator("#results td.value", { hasText: "true" }).waitFor();
  await page.screenshot({ path: `${shots}/playground-component.png` });

  // 9. The same call as a batch (× 3), then as a background job.
  await page.selectOption("#example", { label: "double (the origin's example)" });
  await page.locator("#function option[value=double]").waitFor({ state: "attached" });
  await page.fill("#param-0", "5");
  await page.fill("#repeat", "3");
  await page.click("#run");
  await page.locator("#batch-summary", { hasText: "Batch of 3: 3 answered, 0 failed" }).waitFor();
  await page.locator("#results td.value", { hasText: "10" }).waitFor();
  await page.fill("#repeat", "1");
  await page.fill("#param-0", "8");
  await page.click("#run-job");
  await page.locator("#job-status", { hasText: "done" }).waitFor();
  await page.locator("#results td.value", { hasText: "16" }).waitFor();
  await page.screenshot({ path: `${shots}/playground-job.png` });

  if (failures.length) throw new Error(failures.join("\n"));
  console.log("playground: all steps passed");
} catch (e) {
  console.error(`playground test failed: ${e.message}`);
  if (failures.length) console.error(failures.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
