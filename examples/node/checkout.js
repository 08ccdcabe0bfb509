'use strict';
// A Node.js client of nvp-adapter, on @grpc/grpc-js with the proto loaded from ../../proto at run
// time (so it cannot drift from it):
//
//   1. the Hosted Session backend flow: CreateSession, UpdateSession with an order, RetrieveSession,
//      and what a backend checks before it pays;
//   2. two calls that must fail, and their rich error details decoded from the
//      `grpc-status-details-bin` trailer: a google.rpc.Status holding google.rpc.ErrorInfo,
//      google.rpc.BadRequest and mpgs.gateway.v1.GatewayError.
//
// Usage: node checkout.js --target HOST:PORT [--merchant TESTMERCHANT]
//        [--token-file FILE] [--ca-file CA.pem [--cert-file C.pem --key-file K.pem]]
//
// Exit 0 when every step got what it expected; 1 otherwise (each expectation is printed, ok or
// FAIL, with what was seen); 2 for a usage error or a file that cannot be read.

const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const { getProtoPath } = require('google-proto-files');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
// google-proto-files ships google/rpc/*.proto (and the google/protobuf/*.proto they import).
const GOOGLE_ROOT = path.dirname(getProtoPath());
const DEADLINE_MS = 10_000;
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';

const USAGE = `usage: node checkout.js --target HOST:PORT [--merchant TESTMERCHANT]
       [--token-file FILE] [--ca-file CA.pem [--cert-file C.pem --key-file K.pem]]`;

function parseCommandLine(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        target: { type: 'string' },
        merchant: { type: 'string', default: 'TESTMERCHANT' },
        'token-file': { type: 'string' },
        'ca-file': { type: 'string' },
        'cert-file': { type: 'string' },
        'key-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (error) {
    usageError(error.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (!values.target) usageError('--target is required');
  if (values['cert-file'] && !values['ca-file']) usageError('--cert-file needs --ca-file');
  if (Boolean(values['cert-file']) !== Boolean(values['key-file'])) {
    usageError('--cert-file and --key-file go together');
  }
  return values;
}

function usageError(message) {
  console.error(`${USAGE}\ncheckout.js: error: ${message}`);
  process.exit(2);
}

// The service, from the same .proto files the adapter is built from.
function loadSessionService() {
  const definition = protoLoader.loadSync('mpgs/gateway/v1/session_service.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as the proto spells them: update_status, field_violations
    enums: String,
    longs: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).mpgs.gateway.v1.SessionService;
}

// The types a status's details may hold, for decoding the trailer with protobufjs.
function loadDetailTypes() {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of [PROTO_ROOT, GOOGLE_ROOT]) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) return candidate;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  root.loadSync(
    [
      'google/rpc/status.proto',
      'google/rpc/error_details.proto',
      'mpgs/gateway/v1/gateway_error.proto',
    ],
    { keepCase: true },
  );
  root.resolveAll();
  return root;
}

function channelCredentials(options) {
  if (!options['ca-file']) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    fs.readFileSync(options['ca-file']),
    options['key-file'] ? fs.readFileSync(options['key-file']) : null,
    options['cert-file'] ? fs.readFileSync(options['cert-file']) : null,
  );
}

function callMetadata(options) {
  const metadata = new grpc.Metadata();
  if (options['token-file']) {
    const token = fs.readFileSync(options['token-file'], 'utf8').replace(/\n$/, '');
    metadata.set('authorization', `Bearer ${token}`);
  }
  return metadata;
}

// One unary call as a promise: { response } or { error }, never a rejection.
function call(client, rpc, request, metadata) {
  return new Promise((resolve) => {
    client[rpc](request, metadata, { deadline: Date.now() + DEADLINE_MS }, (error, response) => {
      resolve(error ? { error } : { response });
    });
  });
}

// The rich status of a failed call: google.rpc.Status from the trailer, each Any unpacked by its
// type URL. Returns { code, message, details: { 'google.rpc.ErrorInfo': {...}, ... } }.
function richStatus(root, error) {
  const [bytes] = error.metadata ? error.metadata.get(STATUS_DETAILS_KEY) : [];
  if (!bytes) return { code: error.code, message: error.details, details: {}, unknown: [] };
  const Status = root.lookupType('google.rpc.Status');
  const status = Status.decode(bytes);
  const details = {};
  const unknown = [];
  for (const any of status.details) {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    let type;
    try {
      type = root.lookupType(typeName);
    } catch {
      unknown.push(any.type_url);
      continue;
    }
    details[typeName] = type.toObject(type.decode(any.value), {
      enums: String,
      defaults: true,
      arrays: true,
      objects: true,
    });
  }
  return { code: status.code, message: status.message, details, unknown };
}

const codeName = (code) =>
  Object.keys(grpc.status).find((name) => grpc.status[name] === code) ?? String(code);

// Decimal strings compared as decimals, never as floats: "10.50" and "10.5" are the same amount.
function sameAmount(a, b) {
  const canonical = (text) => {
    const match = /^(\d+)(?:\.(\d+))?$/.exec(text);
    if (!match) return null;
    const whole = match[1].replace(/^0+(?=\d)/, '');
    const fraction = (match[2] ?? '').replace(/0+$/, '');
    return fraction ? `${whole}.${fraction}` : whole;
  };
  const left = canonical(a);
  return left !== null && left === canonical(b);
}

class Expectations {
  constructor() {
    this.failed = 0;
  }

  // Print one expectation, ok or FAIL, with what was seen.
  that(holds, what) {
    if (!holds) this.failed += 1;
    console.log(`  ${holds ? 'ok  ' : 'FAIL'} ${what}`);
    return holds;
  }

  // A call that must succeed: its response, or null (and a FAIL with its status) if it failed.
  succeeded(root, rpc, outcome) {
    if (!outcome.error) return outcome.response;
    const status = richStatus(root, outcome.error);
    this.that(false, `${rpc} succeeds: ${codeName(status.code)} ${status.message}`);
    printDetails(status);
    return null;
  }
}

function printDetails(status) {
  for (const [name, detail] of Object.entries(status.details)) {
    console.log(`       ${name}: ${JSON.stringify(detail)}`);
  }
  for (const typeUrl of status.unknown) console.log(`       ${typeUrl} (not decoded)`);
}

const updateStatus = (session) => session.update_status.replace(/^SESSION_UPDATE_STATUS_/, '');
const result = (response) => response.result.replace(/^RESULT_/, '');

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const SessionService = loadSessionService();
  const root = loadDetailTypes();
  let credentials;
  let metadata;
  try {
    credentials = channelCredentials(options);
    metadata = callMetadata(options);
  } catch (error) {
    console.error(`checkout.js: error: ${error.message}`); // a file that cannot be read
    return 2;
  }
  const client = new SessionService(options.target, credentials);
  const merchant = options.merchant;
  const expect = new Expectations();
  const order = {
    amount: '10.50',
    currency: 'USD',
    id: `order-node-${crypto.randomBytes(4).toString('hex')}`,
  };
  console.log(`adapter: ${options.target}`);

  try {
    console.log('1. CreateSession');
    const created = expect.succeeded(
      root,
      'CreateSession',
      await call(client, 'CreateSession', { merchant, correlation_id: 'node-example' }, metadata),
    );
    if (!created) return 1;
    const session = created.session;
    expect.that(result(created) === 'SUCCESS', `result ${result(created)}`);
    expect.that(/^[0-9A-Za-z]{31,35}$/.test(session.id), `session id ${session.id}`);
    expect.that(/^[0-9a-z]{10}$/.test(session.version), `version ${session.version}`);
    expect.that(updateStatus(session) === 'NO_UPDATE', `updateStatus ${updateStatus(session)}`);

    console.log(`2. UpdateSession: order ${order.id} ${order.amount} ${order.currency}`);
    const updated = expect.succeeded(
      root,
      'UpdateSession',
      await call(
        client,
        'UpdateSession',
        {
          merchant,
          correlation_id: 'node-example',
          // The version just seen: a concurrent change makes the gateway refuse, not overwrite.
          session: { id: session.id, version: session.version },
          order,
        },
        metadata,
      ),
    );
    if (!updated) return 1;
    expect.that(result(updated) === 'SUCCESS', `result ${result(updated)}`);
    expect.that(
      updateStatus(updated.session) === 'SUCCESS',
      `updateStatus ${updateStatus(updated.session)}`,
    );
    expect.that(
      /^[0-9a-z]{10}$/.test(updated.session.version) && updated.session.version !== session.version,
      `a new version: ${session.version} -> ${updated.session.version}`,
    );

    console.log('3. RetrieveSession');
    const retrieved = expect.succeeded(
      root,
      'RetrieveSession',
      await call(
        client,
        'RetrieveSession',
        { merchant, correlation_id: 'node-example', session: { id: session.id } },
        metadata,
      ),
    );
    if (!retrieved) return 1;
    const held = retrieved.order;
    expect.that(result(retrieved) === 'SUCCESS', `result ${result(retrieved)}`);
    expect.that(retrieved.session.id === session.id, `the session created: ${retrieved.session.id}`);
    expect.that(
      sameAmount(held.amount, order.amount),
      `holds the amount set: ${held.amount || '(none)'} (set ${order.amount})`,
    );
    expect.that(
      held.currency === order.currency,
      `holds the currency set: ${held.currency || '(none)'} (set ${order.currency})`,
    );
    expect.that(held.id === order.id, `holds the order id set: ${held.id || '(none)'}`);
    expect.that(
      updateStatus(retrieved.session) === 'SUCCESS',
      `last update succeeded: updateStatus ${updateStatus(retrieved.session)}`,
    );
    expect.that(
      retrieved.session.version === updated.session.version,
      `version to keep for the pay step: ${retrieved.session.version}`,
    );

    console.log('4. UpdateSession with amount "10.5.0": refused by the adapter, nothing sent');
    const invalid = await call(
      client,
      'UpdateSession',
      { merchant, session: { id: session.id }, order: { ...order, amount: '10.5.0' } },
      metadata,
    );
    if (expect.that(Boolean(invalid.error), 'the call fails')) {
      const status = richStatus(root, invalid.error);
      printDetails(status);
      const info = status.details['google.rpc.ErrorInfo'];
      const badRequest = status.details['google.rpc.BadRequest'];
      expect.that(status.code === grpc.status.INVALID_ARGUMENT, `code ${codeName(status.code)}`);
      expect.that(
        info?.domain === 'nvp-adapter' && info?.reason === 'INVALID_REQUEST',
        `ErrorInfo ${info?.domain} ${info?.reason}`,
      );
      const fields = (badRequest?.field_violations ?? []).map((violation) => violation.field);
      expect.that(
        fields.length === 1 && fields[0] === 'order.amount',
        `BadRequest names ${fields.join(', ') || 'no field'}`,
      );
      expect.that(
        !('mpgs.gateway.v1.GatewayError' in status.details),
        'no GatewayError: the gateway was not called',
      );
    }

    console.log(`5. UpdateSession with the stale version ${session.version}: refused by the gateway`);
    const stale = await call(
      client,
      'UpdateSession',
      { merchant, session: { id: session.id, version: session.version }, order },
      metadata,
    );
    if (expect.that(Boolean(stale.error), 'the call fails')) {
      const status = richStatus(root, stale.error);
      printDetails(status);
      const info = status.details['google.rpc.ErrorInfo'];
      const gatewayError = status.details['mpgs.gateway.v1.GatewayError'];
      expect.that(status.code === grpc.status.ABORTED, `code ${codeName(status.code)}`);
      expect.that(
        info?.domain === 'nvp-adapter' && info?.reason === 'SESSION_VERSION_MISMATCH',
        `ErrorInfo ${info?.domain} ${info?.reason}`,
      );
      expect.that(
        info?.metadata?.field === 'session.version',
        `ErrorInfo metadata field ${info?.metadata?.field}`,
      );
      expect.that(
        gatewayError?.cause === 'ERROR_CAUSE_INVALID_REQUEST' &&
          gatewayError?.field === 'session.version' &&
          gatewayError?.validation_type === 'VALIDATION_TYPE_INVALID',
        `GatewayError ${gatewayError?.cause} ${gatewayError?.field} ${gatewayError?.validation_type}`,
      );
    }
  } finally {
    client.close();
  }

  if (expect.failed) {
    console.log(`node example: ${expect.failed} expectation(s) failed`);
    return 1;
  }
  console.log('node example: ok');
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(`node example: ${error.stack || error}`);
    process.exitCode = 1;
  },
);
