// Bounds the pixels being decoded at once, so that memory follows the limits and not the uploads: a 1 KB WebP
// can declare 25 Mpx, and decoding costs ~4–10 bytes per declared pixel. Two lanes, so that a burst of large
// images never makes a normal one wait: images of at least SMALL_IMAGE_PIXELS share `largePixels`, smaller
// ones share SMALL_LANE_PIXELS. Each lane grants in arrival order; an image is charged its header's
// width × height (or the largest allowed image when the header is unreadable).
import { DqError } from '../errors.js';

/** Images below this many pixels (a 1000×1000 photo) decode in the small lane. */
export const SMALL_IMAGE_PIXELS = 1_000_000;
/** The small lane's capacity: 8 Mpx, ~80 MB at worst. */
export const SMALL_LANE_PIXELS = 8_000_000;

interface Waiter {
  readonly pixels: number;
  readonly grant: () => void;
}

class Lane {
  private used = 0;
  private readonly queue: Waiter[] = [];

  constructor(readonly capacity: number) {}

  get inFlight(): number {
    return this.used;
  }

  get waiting(): number {
    return this.queue.length;
  }

  async acquire(pixels: number, signal?: AbortSignal): Promise<void> {
    const charge = Math.min(pixels, this.capacity); // one image over the lane's capacity runs alone
    if (this.queue.length === 0 && this.used + charge <= this.capacity) {
      this.used += charge;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        pixels: charge,
        grant: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        this.pump();
        reject(new DqError('DQ_ERR_CLIENT_DISCONNECTED'));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
  }

  release(pixels: number): void {
    this.used -= Math.min(pixels, this.capacity);
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && this.used + this.queue[0]!.pixels <= this.capacity) {
      const w = this.queue.shift()!;
      this.used += w.pixels;
      w.grant();
    }
  }
}

export class DecodeLimiter {
  private readonly large: Lane;
  private readonly small = new Lane(SMALL_LANE_PIXELS);

  /** `largePixels`: pixels of large images decoded at once (--max-decoding-pixels). */
  constructor(largePixels: number) {
    this.large = new Lane(largePixels);
  }

  /** Runs `decode` once `pixels` fit in the image's lane; the pixels are held until it settles. */
  async run<T>(pixels: number, decode: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const lane = pixels < SMALL_IMAGE_PIXELS ? this.small : this.large;
    await lane.acquire(pixels, signal);
    try {
      return await decode();
    } finally {
      lane.release(pixels);
    }
  }

  /** Pixels being decoded and images waiting, per lane (for metrics and tests). */
  get state(): { largeInFlight: number; largeWaiting: number; smallInFlight: number; smallWaiting: number } {
    return { largeInFlight: this.large.inFlight, largeWaiting: this.large.waiting, smallInFlight: this.small.inFlight, smallWaiting: this.small.waiting };
  }
}
