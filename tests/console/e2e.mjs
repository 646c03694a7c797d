// The console in headless Chromium (issue 13 item 4; W1-W3), driven by tests/console.rs:
// sign in, Remint CA by clicks, replication status, Assign Now, Cancel disabled inside the
// ten-minute cut-off, a second operation refused in the library's words, a screenshot of
// each pane. Any browser console error or page error fails the run.
//
// On a second zone: a CA backup downloaded and restored (a wrong passphrase refused first),
// an activation after the CA expires refused, a Change CA to an external CA by clicks (the
// CSR zip downloaded, the CSR signed with openssl as the "external CA", the certificate
// uploaded), the B3 plan for a chosen time, a second operation refused.
//
// Environment: CONSOLE_URL and CONSOLE_URL2 (https://localhost:PORT/console), CONSOLE_PASSWORD,
// SCREENSHOTS (a directory), WORK (a scratch directory), NODE_MODULES (where playwright-core
// is installed).
import { createRequire } from "node:module";
import path from "node:path";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import zlib from "node:zlib";

const require = createRequire(path.join(process.env.NODE_MODULES, "noop.js"));
const { chromium } = require("playwright-core");

const url = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOTS;
const work = process.env.WORK;
const errors = [];

// The entries of a zip archive (local headers; the crate's zip writer records the sizes
// there): name -> contents.
function unzip(buf) {
  const out = {};
  let i = 0;
  while (i + 30 <= buf.length && buf.readUInt32LE(i) === 0x04034b50) {
    const method = buf.readUInt16LE(i + 8);
    const size = buf.readUInt32LE(i + 18);
    const nameLen = buf.readUInt16LE(i + 26);
    const extraLen = buf.readUInt16LE(i + 28);
    const name = buf.toString("utf8", i + 30, i + 30 + nameLen);
    const start = i + 30 + nameLen + extraLen;
    const data = buf.subarray(start, start + size);
    out[name] = method === 8 ? zlib.inflateRawSync(data) : data;
    i = start + size;
  }
  return out;
}

const openssl = (...args) => execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });

async function signIn(page) {
  await page.goto(process.env.CONSOLE_URL2);
  await page.getByLabel("Administrator password").fill(process.env.CONSOLE_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/console$/);
}

async function secondZone(browser, step) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, acceptDownloads: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => errors.push(`page: ${e.message}`));
  const flash = page.locator("#flash");
  await signIn(page);
  const zoneName = (await page.locator("#zone-name").innerText()).trim();

  // Backup CA: the passphrase twice; the zip archive downloads (BK1).
  await page.getByRole("button", { name: "Backup CA" }).click();
  const backupDialog = page.locator("#backup-dialog");
  await backupDialog.waitFor({ state: "visible" });
  await backupDialog.screenshot({ path: path.join(shots, "backup-dialog.png") });
  const passphrase = "a backup passphrase for the e2e";
  await backupDialog.getByLabel("Passphrase (at least 10 characters)").fill(passphrase);
  await backupDialog.getByLabel("Confirm").fill(passphrase);
  const [backup] = await Promise.all([page.waitForEvent("download"), page.locator("#backup-ok").click()]);
  const archive = path.join(work, "ca-backup.zip");
  await backup.saveAs(archive);
  assert.equal(fs.readFileSync(archive).subarray(0, 2).toString(), "PK", "the backup is a zip archive");
  step("backup downloaded");

  // Restore CA (BK2): a wrong passphrase is refused in the library's words; the right one
  // restores onto the chosen Primary Server.
  await page.reload();
  const restore = async (pass) => {
    await page.getByRole("button", { name: "Restore CA" }).click();
    const d = page.locator("#restore-dialog");
    await d.waitFor({ state: "visible" });
    await d.getByLabel("Backup file").setInputFiles(archive);
    await d.getByLabel("Primary Server to restore the CA onto").selectOption("localhost");
    await d.getByLabel("Passphrase", { exact: true }).fill(pass);
    await d.screenshot({ path: path.join(shots, "restore-dialog.png") });
    await page.locator("#restore-ok").click();
    await page.waitForURL(/\/console$/);
  };
  await restore("not the passphrase at all");
  assert.equal(await flash.getAttribute("role"), "alert", await flash.innerText());
  assert.match(await flash.innerText(), /passphrase/i);
  await restore(passphrase);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  assert.match(await flash.innerText(), /CA restored on localhost/);
  assert.ok(!(await page.content()).includes(passphrase), "the passphrase is not in the page");
  step("wrong passphrase refused; backup restored");

  // An activation after the CA expires: refused, in the library's words.
  await page.getByRole("button", { name: "Remint CA" }).click();
  const rd = page.locator("#remint-dialog");
  await rd.getByLabel("Yes, I want to remint the certificate authority").check();
  await rd.getByLabel("Certificate activation date (UTC)").fill("2199-01-01T00:00");
  await page.locator("#remint-ok").click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "alert", await flash.innerText());
  assert.match(await flash.innerText(), /expire/);
  step(`activation after the CA expires refused: ${await flash.innerText()}`);

  // The external CA: a root made with openssl.
  const root = path.join(work, "ext-root.pem");
  const rootKey = path.join(work, "ext-root.key");
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", rootKey, "-out", root, "-subj", "/O=Acme/CN=Acme External Root", "-days", "3650",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");

  // Change CA to external by clicks (CE1, CE2): fields disabled until confirmed; the
  // internal fields hide when external is chosen; the country takes two letters.
  await page.getByRole("button", { name: "Change CA" }).click();
  const cd = page.locator("#change-dialog");
  await cd.waitFor({ state: "visible" });
  assert.ok(await page.locator("#change-target").isDisabled(), "fields disabled before confirming");
  await cd.getByLabel("Yes, I want to change the certificate authority").check();
  assert.equal(await cd.getByLabel("Subject").inputValue(), zoneName, "Subject defaults to the zone name");
  await cd.getByLabel("Change to").selectOption("external");
  assert.ok(await page.locator("#change-internal").isHidden());
  await cd.getByLabel(/Trusted root certificate/).setInputFiles(root);
  await cd.getByLabel("Let zonepki generate a CSR automatically for each server").check();
  await cd.getByLabel("Organization", { exact: true }).fill("Acme");
  await cd.getByLabel("City/Locality").fill("Provo");
  assert.equal(await cd.getByLabel("Country/region (two letters)").getAttribute("maxlength"), "2");
  await cd.getByLabel("Country/region (two letters)").fill("US");
  const at = new Date(Date.now() + 3 * 3600 * 1000).toISOString().slice(0, 16);
  await cd.getByLabel("Certificate activation date (UTC)").fill(at);
  await cd.screenshot({ path: path.join(shots, "change-ca-dialog.png") });
  await page.locator("#change-ok").click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  assert.match(await flash.innerText(), /The Change CA operation has been initiated/);
  step("Change CA to external started");

  // Assign Now: zoned's own agent makes the server's key and CSR (CE2 automatic).
  await page.getByRole("button", { name: "Assign Now" }).click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  for (let i = 0; i < 120 && (await page.locator("#csrs-zip").count()) === 0; i++) {
    await page.waitForTimeout(500);
    await page.reload();
  }
  assert.equal(await page.locator("#csrs-zip").count(), 1, "the server pane offers the CSR zip");
  const [zipDl] = await Promise.all([page.waitForEvent("download"), page.locator("#csrs-zip").click()]);
  const zipPath = path.join(work, "csrs.zip");
  await zipDl.saveAs(zipPath);
  const csrs = unzip(fs.readFileSync(zipPath));
  assert.ok(csrs["localhost.csr"], `the zip holds localhost.csr: ${Object.keys(csrs)}`);
  const csr = path.join(work, "localhost.csr");
  fs.writeFileSync(csr, csrs["localhost.csr"]);
  const subject = openssl("req", "-in", csr, "-noout", "-subject").toString();
  assert.match(subject, /O ?= ?Acme/);
  assert.match(subject, /C ?= ?US/);
  step(`CSR zip downloaded: ${subject.trim()}`);

  // The "external CA" signs the CSR; the certificate is uploaded (Import Certificate).
  const ext = path.join(work, "leaf.ext");
  fs.writeFileSync(ext, "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n" +
    "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost\n" +
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n");
  const leaf = path.join(work, "localhost.pem");
  openssl("x509", "-req", "-in", csr, "-CA", root, "-CAkey", rootKey, "-CAcreateserial",
    "-days", "365", "-extfile", ext, "-out", leaf);
  await page.locator("#import summary").click();
  await page.getByLabel("Server", { exact: true }).selectOption("localhost");
  await page.getByLabel(/Certificate the external CA issued/).setInputFiles(leaf);
  await page.locator("#import-ok").click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "status", await flash.innerText());
  assert.match(await flash.innerText(), /Certificate imported for localhost/);
  const row = page.locator("#servers tbody tr", { hasText: "localhost" }).first();
  assert.match(await row.locator(".cert-status").innerText(), /new certificate uploaded/);
  assert.ok((await row.getByRole("link", { name: "future certificate" }).count()) === 1);
  await page.locator("#ca-pane").screenshot({ path: path.join(shots, "ca-pane-change-ca.png") });
  await page.locator("#server-pane").screenshot({ path: path.join(shots, "server-pane-change-ca.png") });
  step("certificate signed by the external CA imported");

  // Generate CSR (SR5): the common name is asked only while exactly one server is selected.
  await page.locator("#generate-csr summary").click();
  const gen = page.locator("#generate-csr");
  assert.ok(await page.locator("#gen-cn").isHidden(), "no common name before a server is selected");
  await gen.getByLabel("localhost", { exact: true }).check();
  assert.ok(await page.locator("#gen-cn").isVisible(), "a common name for one server");
  await gen.getByLabel("ps2.zone.example", { exact: true }).check();
  assert.ok(await page.locator("#gen-cn").isHidden(), "no common name for two servers");
  await gen.screenshot({ path: path.join(shots, "generate-csr.png") });
  step("Generate CSR asks a common name for one server only");

  // B3: the plan for a time after activation.
  const later = new Date(Date.now() + 4 * 3600 * 1000).toISOString().slice(0, 16);
  await page.getByLabel("What happens at (UTC)").fill(later);
  await page.getByRole("button", { name: "Show the plan" }).click();
  await page.waitForURL(/\/console\/plan\?/);
  assert.equal(await page.locator("#plan-activated").innerText(), "yes");
  assert.ok((await page.locator("#plan tbody tr").count()) > 0);
  await page.locator("#plan-pane").screenshot({ path: path.join(shots, "plan.png") });
  step(`plan: ${await page.locator("#plan-stranded").innerText()} stranded`);
  await page.getByRole("link", { name: "Back to the Certificates page" }).click();

  // A second operation while the Change CA runs: refused, in the library's words.
  await page.getByRole("button", { name: "Remint CA" }).click();
  await rd.getByLabel("Yes, I want to remint the certificate authority").check();
  await rd.getByLabel("Certificate activation date (UTC)").fill(at);
  await page.locator("#remint-ok").click();
  await page.waitForURL(/\/console$/);
  assert.equal(await flash.getAttribute("role"), "alert");
  assert.match(await flash.innerText(), /is in progress: .* cannot start until it is cancelled or baselined/);
  step("second operation refused during the Change CA");
  await page.locator("#audit-pane").screenshot({ path: path.join(shots, "audit-pane-change-ca.png") });
  await context.close();
}

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
    const dialog = page.locator("#remint-dialog");
    await dialog.getByLabel("Valid for (years)").fill(String(years));
    const at = typeof minutesAhead === "string" ? minutesAhead
      : new Date(Date.now() + minutesAhead * 60 * 1000).toISOString().slice(0, 16);
    await dialog.getByLabel("Certificate activation date (UTC)").fill(at);
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

  // 4. A second zone (CONSOLE_URL2, no operation running) in its own browser context (the
  //    session cookies of two servers on one host would meet): backup and restore, the
  //    refusals, and a Change CA to an external CA by clicks.
  await secondZone(browser, step);
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
