// Drives the portal's pages in headless Chromium as two users, each reached
// through a front proxy that asserts the user, and checks that another page
// cannot frame them (UNPROTECTED_URL: alice through a proxy that strips the
// anti-framing headers, the control):
//   node admin.mjs ALICE_URL BOB_URL UNPROTECTED_URL
import { chromium } from 'playwright-core';

const [alice, bob, unprotected] = process.argv.slice(2);
if (!alice || !bob || !unprotected) {
  console.error('usage: node admin.mjs ALICE_URL BOB_URL UNPROTECTED_URL');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let step = 0;
function check(cond, what) {
  step += 1;
  if (!cond) throw new Error(`step ${step}: ${what}`);
  console.log(`ok ${step} - ${what}`);
}

try {
  const page = await browser.newPage();

  await page.goto(`${alice}/`);
  check((await page.textContent('#who')) === 'alice', 'who am I shows alice');

  await page.goto(`${alice}/admin/permissions`);
  await page.selectOption('#activation', 'manual');
  await page.click('#save');
  check((await page.textContent('#message')).includes('Saved'), 'alice switches to manual activation');

  let resp = await page.goto(`${bob}/`);
  check(resp.status() === 403, `bob's first visit is held (status ${resp.status()})`);
  check((await page.textContent('body')).includes('awaits activation'), 'bob sees the activation page');

  await page.goto(`${alice}/admin/users`);
  check((await page.textContent('tr[data-user="bob"] .state')) === 'inactive', 'alice sees bob inactive');
  await Promise.all([page.waitForURL(`${alice}/admin/users`), page.click('#activate-bob')]);
  check((await page.textContent('tr[data-user="bob"] .state')) === 'active', 'one click activates bob');

  resp = await page.goto(`${bob}/`);
  check(resp.status() === 200 && (await page.textContent('#who')) === 'bob', 'bob is signed in');

  resp = await page.goto(`${bob}/admin/users`);
  check(resp.status() === 403, 'bob cannot open the admin pages');

  await page.goto(`${alice}/admin/auth`);
  check(await page.isChecked('#clean_username'), 'clean user names is on');
  await page.fill('#fallback_header', 'X-Forwarded-User');
  await page.click('#save');
  check((await page.textContent('#message')).includes('Saved'), 'alice saves the authentication page');
  check((await page.inputValue('#fallback_header')) === 'X-Forwarded-User', 'the fallback header is kept');

  // Another site frames the users page, whose one-click forms would
  // otherwise be clickjacked. The frame must stay empty; through the proxy
  // that strips the headers the same frame shows the page, so the check can
  // see a framed page when there is one.
  async function framedTable(url) {
    const attacker = await browser.newPage();
    try {
      await attacker.setContent(`<iframe id="f" src="${url}" width="800" height="600"></iframe>`);
      const frame = await (await attacker.waitForSelector('#f')).contentFrame();
      for (let i = 0; i < 30; i += 1) {
        if (frame && await frame.locator('#users').count() > 0) return true;
        await attacker.waitForTimeout(100);
      }
      return false;
    } finally {
      await attacker.close();
    }
  }
  check(await framedTable(`${unprotected}/admin/users`), 'control: without the headers a frame shows the users page');
  check(!(await framedTable(`${alice}/admin/users`)), 'the users page refuses to be framed');

  if (process.env.SCREENSHOT) {
    await page.goto(`${alice}/admin/users`);
    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  }
  console.log(`${step} passed, 0 failed`);
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
