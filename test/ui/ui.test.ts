// The page at / in a real headless browser (Debian's chromium through playwright-core; no browser download):
// upload a CIFAR-10 test image, see the server's own answer and the bit chart, move the knob and the Bit-FLOPs
// cap and watch the cost move, see the live view update; keyboard access; no script or CSP errors. A screenshot
// goes to reports/ui/ui.png. Without chromium it fails (.ci/run installs Debian's) unless DQSERVE_SKIP_BROWSER=1.
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { hasDynamicBundle, MODELS_DIR, REPO_ROOT } from '../helpers/paths.js';
import { postImage, startTestServer } from '../helpers/server.js';

const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
const skip = process.env['DQSERVE_SKIP_BROWSER'] === '1';
if (!skip && !existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (or CHROMIUM_PATH=..., or DQSERVE_SKIP_BROWSER=1)`);

describe.skipIf(skip || !hasDynamicBundle)('the page at /', () => {
  let server: RunningServer;
  let browser: Browser;
  let page: Page;
  const problems: string[] = [];
  let imagePath = '';
  let image: Buffer;

  beforeAll(async () => {
    server = await startTestServer({ engine: 'ort', modelRepository: MODELS_DIR });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1100, height: 1800 } });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
    // A cat; where the default is gated, an image pass 1 is unsure of, so that a cap has a second pass to leave out.
    const sample = await cifarSample(8);
    const cats = [sample.find((i) => i.label === 'cat')!, ...sample].map((i) => i.bytes);
    image = cats[0]!;
    for (const c of cats) {
      if ((await postImage(server.url, c, 'image/jpeg', '?model=resnet20_dq')).json.passes === 2) {
        image = c;
        break;
      }
    }
    imagePath = join(mkdtempSync(join(tmpdir(), 'dqserve-ui-')), 'cat.jpg');
    writeFileSync(imagePath, image);
    await page.goto(server.url);
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  const cost = async () => Number(await page.getAttribute('#cost', 'data-bitflops'));
  const setRange = (selector: string, value: number) =>
    page.locator(selector).evaluate((input: any, v) => {
      input.value = String(v);
      input.dispatchEvent(new input.ownerDocument.defaultView.Event('input', { bubbles: true }));
    }, value);
  // Predicates run in the page (its CSP forbids evaluating strings); the page's globals are untyped here.
  /** Resolves when the page's current Bit-FLOPs compare to `value` as `op` says. */
  const costWhere = (op: '>' | '<=' | '===', value: number) =>
    page.waitForFunction(([o, v]) => {
      const x = Number((globalThis as any).document.querySelector('#cost').getAttribute('data-bitflops'));
      return o === '>' ? x > v : o === '<=' ? x <= v : x === v;
    }, [op, value] as const);

  it('is served with the models listed, offline (same-origin assets only)', async () => {
    await page.waitForFunction(() => (globalThis as any).document.querySelector('#model').options.length > 0);
    expect(await page.$$eval('#model option', (os) => os.map((o) => o.textContent))).toEqual(['resnet20_dq', 'resnet20_w4']);
    const external = await page.$$eval('script[src], link[href]', (els) => els.map((e) => e.getAttribute('src') ?? e.getAttribute('href')).filter((u) => u && /^https?:/.test(u)));
    expect(external).toEqual([]);
  });

  it('opens the file picker from the keyboard', async () => {
    // The picker is the file input's click; cancelling that click keeps a native dialog from opening at all.
    await page.locator('#file').evaluate((input: any) => input.addEventListener('click', (e: any) => {
      e.preventDefault();
      input.dataset.clicked = 'yes';
    }, { once: true }));
    await page.focus('#drop');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => (globalThis as any).document.querySelector('#file').dataset.clicked === 'yes');
  });

  it('shows the server\'s answer for an uploaded CIFAR-10 image, the bits per layer and the costs', async () => {
    const api = await postImage(server.url, image, 'image/jpeg', '?model=resnet20_dq');
    await page.setInputFiles('#file', imagePath);
    await page.waitForSelector('#result:not([hidden])');
    await page.waitForFunction(() => (globalThis as any).document.querySelector('#bits-table tbody').children.length > 0);
    expect(await page.textContent('#label')).toBe(api.json.label);
    expect(await cost()).toBe(api.json.bitflops);
    expect(await page.$$eval('#bits-table tbody tr', (rows) => rows.map((r) => Number(r.children[1]!.textContent)))).toEqual(Object.values(api.json.bits));
    expect(await page.$('#bits-chart canvas')).not.toBeNull();
    expect(await page.isVisible('#twin-card')).toBe(true); // the static twin side by side
    expect(await page.textContent('#cost')).toContain('full precision');
  });

  it('re-runs the image as the knob and the Bit-FLOPs cap move: cost rises, then falls to the cap', async () => {
    const meta = (await (await fetch(`${server.url}/v2/models/resnet20_dq`)).json()) as any;
    const api = await postImage(server.url, image, 'image/jpeg', '?model=resnet20_dq');
    if (meta.parameters.policy) {
      // a gated default says how many passes answered
      expect(await page.textContent('#passes')).toMatch(api.json.passes === 2 ? /^two passes/ : /^one pass/);
    }
    if (!meta.parameters.controller) {
      // nothing for the knob to steer: it is off and says why; the cap still moves the cost
      expect(await page.isDisabled('#knob')).toBe(true);
      expect(await page.textContent('#knob-note')).toContain('no controller');
      expect(api.json.passes).toBe(2); // the image chosen above: the cap has a second pass to leave out
    } else {
      await setRange('#knob', -2);
      await costWhere('>', api.json.bitflops);
    }
    const costly = await cost();
    await page.check('#cap-on');
    const min = Number(await page.getAttribute('#cap', 'min'));
    await setRange('#cap', min);
    await costWhere('<=', min);
    expect(await cost()).toBeLessThan(costly);
    expect(await cost()).toBeLessThanOrEqual(min);
  });

  it('updates the live view from the server\'s metrics, and keeps a screenshot', async () => {
    await page.waitForFunction(() => Number((globalThis as any).document.querySelector('#live-samples').textContent) >= 2, undefined, { timeout: 15_000 });
    expect(await page.textContent('#live-rps')).toMatch(/^\d+\.\d$/);
    // the classifications above reach the metrics within a poll or two
    await page.waitForFunction(() => /% overall$/.test((globalThis as any).document.querySelector('#live-savings').textContent), undefined, { timeout: 15_000 });
    expect(await page.$('#live-chart canvas')).not.toBeNull();
    expect(await page.$('#live-saved canvas')).not.toBeNull();
    // back to the controller's own choice for the picture
    await page.uncheck('#cap-on');
    await setRange('#knob', 0);
    const api = await postImage(server.url, image, 'image/jpeg', '?model=resnet20_dq');
    await costWhere('===', api.json.bitflops);
    mkdirSync(join(REPO_ROOT, 'reports', 'ui'), { recursive: true });
    await page.screenshot({ path: join(REPO_ROOT, 'reports', 'ui', 'ui.png'), fullPage: true });
    expect(problems).toEqual([]);
  });

  it('says what is wrong with an upload that is not an image', async () => {
    const textPath = join(imagePath, '..', 'notes.txt');
    writeFileSync(textPath, 'not an image');
    await page.setInputFiles('#file', textPath);
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.textContent('#error')).toContain('DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT');
  });
});
