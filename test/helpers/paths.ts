// Where tests find the repository, the shared data and the real bundle.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DATA_DIR = resolve(REPO_ROOT, '..', 'shared', 'data');
export const PHOTOS_DIR = join(DATA_DIR, 'photos');
export const CIFAR_TEST_TAR = join(DATA_DIR, 'cifar10', 'test.tar.gz');
export const MODELS_DIR = join(REPO_ROOT, 'models');
export const DYNAMIC_BUNDLE = join(MODELS_DIR, 'resnet20_dq', '2');
export const FIXTURES = join(REPO_ROOT, 'test', 'fixtures');

/** The real trained bundle is present (manifest written last by `training export`). */
export const hasDynamicBundle = existsSync(join(DYNAMIC_BUNDLE, 'manifest.json'));
