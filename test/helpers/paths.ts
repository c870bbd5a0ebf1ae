// Where tests find the repository, the shared data and the real bundle.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** ../shared/data beside the checkout, or $DQSERVE_SHARED/data (StrykerJS runs the tests from a sandbox copy). */
export const DATA_DIR = resolve(process.env['DQSERVE_SHARED'] ?? resolve(REPO_ROOT, '..', 'shared'), 'data');
export const PHOTOS_DIR = join(DATA_DIR, 'photos');
export const CIFAR_TEST_TAR = join(DATA_DIR, 'cifar10', 'test.tar.gz');
export const MODELS_DIR = join(REPO_ROOT, 'models');
/** The newest version of a model in models/ (the one the server serves by default), or '0' when none. */
function latest(model: string): string {
  const dir = join(MODELS_DIR, model);
  const versions = existsSync(dir) ? readdirSync(dir).filter((v) => /^[1-9][0-9]*$/.test(v)).map(Number) : [];
  return String(Math.max(0, ...versions));
}
/** The default model's bundle; shipping a new version needs no test edits. */
export const DYNAMIC_BUNDLE = join(MODELS_DIR, 'resnet20_dq', latest('resnet20_dq'));
export const FIXTURES = join(REPO_ROOT, 'test', 'fixtures');

/** The real trained bundle is present (manifest written last by `training export`). */
export const hasDynamicBundle = existsSync(join(DYNAMIC_BUNDLE, 'manifest.json'));
