// The DQ_ERR_* catalogue: every error the server reports, with its one HTTP status.
// Clients and tests match `code`, never the message. docs/errors.md lists exactly these codes
// (test/errors.test.ts keeps the two in step). Codes are never renamed once shipped.

interface ErrorSpec {
  readonly status: number;
  readonly message: string;
}

export const ERRORS = {
  // Request framing (routes)
  DQ_ERR_REQUEST_EMPTY_BODY: { status: 400, message: 'request body is empty' },
  DQ_ERR_REQUEST_MALFORMED_JSON: { status: 400, message: 'request body is not valid JSON' },
  DQ_ERR_REQUEST_INVALID: { status: 400, message: 'request does not match the schema' },
  DQ_ERR_REQUEST_INVALID_PARAMETER: { status: 400, message: 'invalid request parameter' },
  DQ_ERR_BUDGET_BELOW_MINIMUM: { status: 400, message: 'max_bitflops cannot be met' },
  DQ_ERR_REQUEST_MULTIPART_INVALID: { status: 400, message: 'multipart body must hold exactly one file field named "image"' },
  DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'unsupported Content-Type' },
  DQ_ERR_REQUEST_TOO_LARGE: { status: 413, message: 'request body exceeds the byte limit' },
  DQ_ERR_REQUEST_UNSUPPORTED_ENCODING: { status: 415, message: 'unsupported Content-Encoding (identity, gzip or deflate)' },
  DQ_ERR_ROUTE_NOT_FOUND: { status: 404, message: 'no such route' },
  // HTTP framing, answered by the connection's parser before any route runs
  DQ_ERR_HTTP_MALFORMED: { status: 400, message: 'malformed HTTP request' },
  DQ_ERR_HTTP_HEADERS_TOO_LARGE: { status: 431, message: 'request headers too large' },
  DQ_ERR_HTTP_REQUEST_TIMEOUT: { status: 408, message: 'the request was not received in time' },

  // Image decoding (preprocess)
  DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT: { status: 415, message: 'not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, AVIF)' },
  DQ_ERR_PREPROCESS_DECODE_FAILED: { status: 400, message: 'image could not be decoded (truncated or corrupt)' },
  DQ_ERR_PREPROCESS_TOO_MANY_PIXELS: { status: 413, message: 'image exceeds the pixel limit' },

  // Open Inference Protocol v2 (protocol)
  DQ_ERR_OIP_INVALID_INPUT: { status: 400, message: 'invalid inference input' },
  DQ_ERR_OIP_INVALID_OUTPUT: { status: 400, message: 'invalid requested output' },
  DQ_ERR_OIP_BINARY_INVALID: { status: 400, message: 'invalid binary tensor data' },

  // Model repository
  DQ_ERR_MODEL_NOT_FOUND: { status: 404, message: 'unknown model' },
  DQ_ERR_MODEL_VERSION_NOT_FOUND: { status: 404, message: 'unknown model version' },
  DQ_ERR_MODEL_NOT_READY: { status: 503, message: 'model is not ready' },

  // Scheduling (batching) and lifecycle
  DQ_ERR_QUEUE_FULL: { status: 503, message: 'inference queue is full, retry later' },
  DQ_ERR_QUEUE_TIMEOUT: { status: 503, message: 'request timed out before it could be scheduled' },
  DQ_ERR_SERVER_SHUTTING_DOWN: { status: 503, message: 'server is shutting down' },
  DQ_ERR_SERVER_OVERLOADED: { status: 503, message: 'server is overloaded (event loop delayed), retry later' },
  // nginx's 499: nobody reads it (the client has gone); it names the outcome in logs and metrics.
  DQ_ERR_CLIENT_DISCONNECTED: { status: 499, message: 'the client closed the connection before the answer' },

  // Server faults (details are logged, never sent)
  DQ_ERR_ENGINE_FAILED: { status: 500, message: 'inference failed' },
  // A fault that leaves the device unusable for the rest of the process (CUDA's "sticky" errors): liveness fails.
  DQ_ERR_ENGINE_LOST: { status: 500, message: 'the GPU is lost to this process; the server must be restarted' },
  DQ_ERR_SERVER_INTERNAL: { status: 500, message: 'internal server error' },

  // Start-up (never reach a client)
  DQ_ERR_CONFIG_INVALID: { status: 500, message: 'invalid configuration' },
  DQ_ERR_BUNDLE_INVALID: { status: 500, message: 'invalid model bundle' },
  DQ_ERR_BUNDLE_CHECKSUM: { status: 500, message: 'model bundle file does not match its sha256' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

export interface DqErrorOptions {
  /** Seconds for a Retry-After header (503s that a client should retry). */
  retryAfterS?: number;
  cause?: unknown;
}

export class DqError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly retryAfterS: number | undefined;
  /** What this instance adds to the catalogue message, if anything. */
  readonly detail: string | undefined;

  constructor(code: ErrorCode, detail?: string, options: DqErrorOptions = {}) {
    const spec = ERRORS[code];
    // Only faults get a stack: under overload thousands of 503s a second are refused, and capturing each
    // one's stack cost a few per cent of the event loop (measured) for a trace nobody reads.
    const limit = Error.stackTraceLimit;
    if (!isFault(spec.status)) Error.stackTraceLimit = 0;
    try {
      super(detail ? `${spec.message}: ${detail}` : spec.message, { cause: options.cause });
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'DqError';
    this.code = code;
    this.detail = detail;
    this.statusCode = spec.status;
    this.retryAfterS = options.retryAfterS;
  }
}

/** A server fault (logged with its stack), as opposed to a client's mistake or load shedding (503). */
export function isFault(status: number): boolean {
  return status >= 500 && status !== 503;
}

export function isDqError(err: unknown): err is DqError {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code in ERRORS && 'statusCode' in err;
}

/** The JSON body every error response carries. 5xx bodies keep only the catalogue message. */
export function errorBody(err: DqError): { error: string; code: ErrorCode } {
  return { error: err.statusCode >= 500 ? ERRORS[err.code].message : err.message, code: err.code };
}
