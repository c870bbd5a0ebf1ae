// The one error handler: maps our DqErrors and fastify's own framing errors to the DQ_ERR_* catalogue,
// answers {error, code}, logs 5xx with request context and never sends their details.
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { DqError, errorBody, isDqError, isFault, type ErrorCode } from '../../errors.js';

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'DQ_ERR_REQUEST_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'DQ_ERR_REQUEST_INVALID',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'DQ_ERR_REQUEST_EMPTY_BODY',
  FST_ERR_CTP_INVALID_JSON_BODY: 'DQ_ERR_REQUEST_MALFORMED_JSON',
  FST_ERR_CTP_EMPTY_TYPE: 'DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE',
  FST_REQ_FILE_TOO_LARGE: 'DQ_ERR_REQUEST_TOO_LARGE',
  FST_FILES_LIMIT: 'DQ_ERR_REQUEST_MULTIPART_INVALID',
  FST_PARTS_LIMIT: 'DQ_ERR_REQUEST_MULTIPART_INVALID',
  FST_FIELDS_LIMIT: 'DQ_ERR_REQUEST_MULTIPART_INVALID',
  FST_PROTO_VIOLATION: 'DQ_ERR_REQUEST_MULTIPART_INVALID',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'DQ_ERR_REQUEST_MULTIPART_INVALID',
  FST_NO_FORM_DATA: 'DQ_ERR_REQUEST_MULTIPART_INVALID',
};

export function toDqError(err: unknown): DqError {
  if (isDqError(err)) return err;
  const e = err as Partial<FastifyError> & Error;
  if (e?.validation) {
    // A body that breaks its schema is an invalid request; a bad query string, header or path parameter is a
    // bad parameter (docs/errors.md), an unknown one included: a typo must not silently drop a cost cap.
    const extra = (e.validation[0]?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const message = extra ? `unknown ${e.validationContext ?? 'request'} parameter "${extra}"` : e.message;
    return new DqError(e.validationContext === 'body' ? 'DQ_ERR_REQUEST_INVALID' : 'DQ_ERR_REQUEST_INVALID_PARAMETER', message, { cause: err });
  }
  const mapped = e?.code ? FASTIFY_CODES[e.code] : undefined;
  if (mapped) return new DqError(mapped, undefined, { cause: err });
  if (e instanceof SyntaxError) return new DqError('DQ_ERR_REQUEST_MALFORMED_JSON', undefined, { cause: err });
  // Multipart stream errors from busboy ("Malformed part header", "Unexpected end of form") carry no code.
  if (typeof e?.message === 'string' && /multipart|part header|end of form|boundary/i.test(e.message)) {
    return new DqError('DQ_ERR_REQUEST_MULTIPART_INVALID', undefined, { cause: err });
  }
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new DqError('DQ_ERR_REQUEST_INVALID', e.message, { cause: err });
  }
  return new DqError('DQ_ERR_SERVER_INTERNAL', undefined, { cause: err });
}

export function sendError(reply: FastifyReply, err: DqError): FastifyReply {
  if (err.retryAfterS !== undefined) reply.header('retry-after', String(err.retryAfterS));
  if (err.code === 'DQ_ERR_SERVER_SHUTTING_DOWN') reply.header('connection', 'close');
  return reply.code(err.statusCode).type('application/json; charset=utf-8').send(errorBody(err));
}

/** What a route accepts, for a 415 that says so (curl --data-binary sends application/x-www-form-urlencoded). */
function acceptedTypes(url: string): string {
  return url.startsWith('/v1/')
    ? 'send the image as image/* or application/octet-stream, or as multipart/form-data'
    : 'send application/json, or application/octet-stream with the binary tensor extension';
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    let dq = toDqError(err);
    if (dq.code === 'DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE' && dq.detail === undefined) {
      const type = request.headers['content-type'];
      dq = new DqError(dq.code, `${type ? `${type.split(';')[0]} is not accepted here; ` : ''}${acceptedTypes(request.url)}`, { cause: err });
    }
    // Shedding (503) is counted in dqserve_requests_total{reason}, not logged at info: under overload it would
    // write a line per refused request, thousands a second, when the server most needs its CPU.
    if (isFault(dq.statusCode)) request.log.error({ err, code: dq.code }, 'request failed');
    else if (dq.statusCode === 503) request.log.debug({ code: dq.code, detail: dq.message }, 'request shed');
    else request.log.info({ code: dq.code, detail: dq.message }, 'request rejected');
    return sendError(reply, dq);
  });
  app.setNotFoundHandler((request, reply) => sendError(reply, new DqError('DQ_ERR_ROUTE_NOT_FOUND', `${request.method} ${request.url.split('?')[0]}`)));
}

/**
 * Fastify's clientErrorHandler: errors of the HTTP parser (a garbage request line, a bad Content-Length or
 * chunk, headers over the limit, a body that never arrives) reach no route, so they are answered here on the
 * raw socket, in the same {error, code} shape with an x-request-id for the log line.
 */
export function clientErrorHandler(this: { log: FastifyBaseLogger }, err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const dq = new DqError(
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'DQ_ERR_HTTP_REQUEST_TIMEOUT' : err.code === 'HPE_HEADER_OVERFLOW' ? 'DQ_ERR_HTTP_HEADERS_TOO_LARGE' : 'DQ_ERR_HTTP_MALFORMED',
    err.code,
  );
  const id = randomUUID();
  this.log.info({ reqId: id, code: dq.code, detail: err.code }, 'client error');
  const body = JSON.stringify(errorBody(dq));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${dq.statusCode} ${STATUS_TEXT[dq.statusCode] ?? 'Bad Request'}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nx-request-id: ${id}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };
