// Where tests find the repository, the shared data and the real bundle.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** ../shared/data beside the checkout, or $DQSERVE_SHARED/data (StrykerJS runs the tests from a sandbox copy). */
export const DATA_DIR = resolve(process.env['DQSERVE_SHARED'] ?? resolve(REPO_ROOT, '..', 'shared'), 'data');
export const PHOTOS_DIR = join(DATA_DIR, 'photos');
export const CIFAR_TEST_TAR = join(DATA_DIR, 'cifar10', 'test.tar.gz');
export const MODELS_DIR = join(REPO_ROOT, 'models');
/** A model's versions in models/, newest first. */
function versions(model: string): number[] {
  const dir = join(MODELS_DIR, model);
  return existsSync(dir) ? readdirSync(dir).filter((v) => /^[1-9][0-9]*$/.test(v)).map(Number).sort((a, b) => b - a) : [];
}
/** The newest version of a model in models/ (the one the server serves by default), or '0' when none. */
function latest(model: string): string {
  return String(versions(model)[0] ?? 0);
}
/** The default model's bundle; shipping a new version needs no test edits. */
export const DYNAMIC_BUNDLE = join(MODELS_DIR, 'resnet20_dq', latest('resnet20_dq'));
export const FIXTURES = join(REPO_ROOT, 'test', 'fixtures');

/** The real trained bundle is present (manifest written last by `training export`). */
export const hasDynamicBundle = existsSync(join(DYNAMIC_BUNDLE, 'manifest.json'));
/**
 * The newest resnet20_dq version with a controller and a calibration table (what the knob and --target-bitflops
 * steer; the default may be a gated bundle without one), or '0' when none.
 */
export const CONTROLLER_VERSION = String(
  versions('resnet20_dq').find((v) => {
    const file = join(MODELS_DIR, 'resnet20_dq', String(v), 'manifest.json');
    return existsSync(file) && (JSON.parse(readFileSync(file, 'utf8')) as { calibration?: unknown[] }).calibration?.length;
  }) ?? 0,
);
export const CONTROLLER_BUNDLE = join(MODELS_DIR, 'resnet20_dq', CONTROLLER_VERSION);
export const hasControllerBundle = CONTROLLER_VERSION !== '0';
