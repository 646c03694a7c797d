// The console in headless Chromium (issue 13 item 4; W1-W3), driven by tests/console.rs:
// sign in, Remint CA by clicks, replication status, Assign Now, Cancel disabled inside the
// ten-minute cut-off, a second operation refused in the library's words, a screenshot of
// each pane. Any browser console error or page error fails the run.
//
// Environment: CONSOLE_URL (https://localhost:PORT/console), CONSOLE_PASSWORD, SCREENSHOTS
// (a directory), NODE_MODULES (where playwright-core is installed).
import { createRequire } from "node:module";
import path from "node:path";
import assert from "node:assert/strict";

const require = createRequire(path.join(process.env.NODE_MODULES, "noop.js"));
const { chromium } = require("playwright-core");

const url = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOTS;
const errors = [];

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  // The zone CA is private to the test zone: Chromium does not know it.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`page: ${e.message}`));
  const step = (s) => console.log(`e2e: ${s}`);

  // Sign in.
  await page.goto(url);
  assert.match(page.url(), /\/console\/signin$/);
  await page.screenshot({ path: path.join(shots, "signin.png") });
  await page.getByLabel("Administrator password").fill(process.env.CONSOLE_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/console$/);
  assert.equal(await page.locator("h1").innerText(), "Configuration > Certificates");
  const zoneName = (await page.locator("#zone-name").innerText()).trim();
  step(`signed in, zone ${zoneName}`);

  for (const pane of ["ca-pane", "server-pane", "device-pane", "audit-pane"]) {
    await page.locator(`#${pane}`).screenshot({ path: path.join(shots, `${pane}.png`) });
  }
  // The device table pages (120 devices, 50 a page) and filters by status.
  assert.equal(await page.locator("#devices tbody tr").count(), 50);
  await page.locator("#devices-next").click();
  assert.equal(await page.locator("#devices tbody tr").count(), 50);
  await page.getByLabel("Status", { exact: true }).selectOption("none");
  await page.getByRole("button", { name: "Filter" }).click();
  assert.ok((await page.locator("#devices tbody tr").count()) > 0);
  step("device table pages and filters");

  // Remint CA by clicks: the fields are activated only once confirmed.
  const remint = async (minutesAhead, years) => {
    await page.getByRole("button", { name: "Remint CA" }).click();
    await page.locator("#remint-dialog").waitFor({ state: "visible" });
    assert.ok(await page.locator("#remint-cn").isDisabled(), "fields disabled before confirming");
    await page.getByLabel("Yes, I want to remint the certificate authority").check();
    assert.ok(await page.locator("#remint-cn").isEnabled());
    assert.equal(await page.locator("#remint-cn").inputValue(), zoneName, "Common name defaults to the zone name");
    assert.equal(await page.locator("#remint-years").getAttribute("min"), "1");
    assert.equal(await page.locator("#remint-years").getAttribute("max"), "10");
    await page.getByLabel("Valid for (years)").fill(String(years));
    const at = new Date(Date.now() + minutesAhead * 60 * 1000).toISOString().slice(0, 16);
    await page.getByLabel("Certificate activation date (UTC)").fill(at);
    await page.locator("#remint-ok").click();
    await page.waitForURL(/\/console$/);
  };
  const flash = page.locator("#flash");

  // 1. Activation an hour ahead: replication status, Assign Now, then Cancel (confirmed).
  await remint(60, 5);
  assert.match(await flash.innerText(), /The Remint CA operation has been initiated/);
  assert.equal(await flash.getAttribute("role"), "status");
  await page.locator("#op-banner").waitFor();
  assert.equal(await page.locator("#op-state").innerText(), "replicating");
  assert.ok((await page.locator("#replication table tbody tr").count()) > 0, "the replication status lists the servers");
  assert.ok(await page.locator("#cancel").isEnabled(), "Cancel is enabled outside the cut-off");
  step("Remint CA started; replication status shown");
  await page.getByRole("button", { name: "Assign Now" }).click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  assert.equal(await page.locator("#op-state").innerText(), "assigned");
  step("Assign Now");
  page.once("dialog", (d) => d.accept());
  await page.locator("#cancel").click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  assert.match(await flash.innerText(), /cancelled/);
  assert.equal(await page.locator("#op-banner").count(), 0, "no banner after the cancel");
  step("Cancel");

  // 2. Activation five minutes ahead: inside the ten-minute cut-off at once. Cancel is
  //    disabled, Assign Now is refused in the library's words.
  await remint(5, 2);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  assert.ok(await page.locator("#cancel").isDisabled(), "Cancel is disabled inside the cut-off");
  assert.match(await page.locator("#cancel-why").innerText(), /ten minutes before activation/);
  await page.locator("#ca-pane").screenshot({ path: path.join(shots, "ca-pane-operation.png") });
  await page.getByRole("button", { name: "Assign Now" }).click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "alert");
  assert.match(await flash.innerText(), /within ten minutes of activation/);
  step("Cancel disabled and Assign Now refused inside the cut-off");

  // 3. A second operation: refused, in the library's words.
  await remint(60, 5);
  assert.equal(await flash.getAttribute("role"), "alert");
  assert.match(await flash.innerText(), /is in progress: .* cannot start until it is cancelled or baselined/);
  step("second operation refused");

  await page.locator("#server-pane").screenshot({ path: path.join(shots, "server-pane.png") });
  await page.screenshot({ path: path.join(shots, "page.png"), fullPage: true });
} catch (e) {
  // Say where the page was: its address and text, and the browser's errors so far.
  for (const p of browser.contexts().flatMap((c) => c.pages())) {
    console.log(`e2e: failed at ${p.url()}\n${(await p.locator("body").innerText().catch(() => "")).slice(0, 3000)}`);
  }
  console.log(`e2e: browser errors: ${JSON.stringify(errors)}`);
  throw e;
} finally {
  await browser.close();
}
assert.deepEqual(errors, [], "the browser reported errors");
console.log("e2e: all steps passed");
