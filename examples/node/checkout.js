'use strict';
// A Node.js client of nvp-adapter, on @grpc/grpc-js with the proto loaded from ../../proto at run
// time (so it cannot drift from it):
//
//   1. the Hosted Session backend flow: CreateSession, UpdateSession with an order, RetrieveSession,
//      and what a backend checks before it pays;
//   2. two calls that must fail, and their rich error details decoded from the
//      `grpc-status-details-bin` trailer: a google.rpc.Status holding google.rpc.ErrorInfo,
//      google.rpc.BadRequest and mpgs.gateway.v1.GatewayError;
//   3. a payment: the MPGS test card put into the session (what the payer's browser does through
//      session.js), then Pay with an order reference of TEST-ANSWER-LOST, which makes the
//      embedded gateway pay and lose the answer: the adapter finds the payment again (trailer
//      `nvp-adapter-outcome: reconciled`); Pay again with the same ids gets the same transaction
//      (`replayed`, no second charge); RetrieveOrder shows one payment; a Refund of more than was
//      captured is refused (FAILED_PRECONDITION AMOUNT_EXCEEDS_BALANCE); and a declined card is
//      an answer, not an error.
//
// The payment steps need the embedded gateway (`nvp-adapter serve` with no upstream URL) or
// an MPGS test merchant; the TEST-ANSWER-LOST hook is the embedded gateway's alone.
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
// A payment's deadline: room for its attempt and for finding a lost answer again.
const PAY_DEADLINE_MS = 30_000;
const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const OUTCOME_TRAILER = 'nvp-adapter-outcome';
// The MPGS test Mastercard: its expiry date chooses the outcome (01/39 approved, 05/39 declined).
const TEST_CARD = '5123450000000008';
const MASKED_TEST_CARD = '512345xxxxxx0008';
const TEST_SECURITY_CODE = '100';
// An order reference that makes the embedded gateway carry out the operation, then close the
// connection without an answer.
const ANSWER_LOST = 'TEST-ANSWER-LOST';

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

// The services, from the same .proto files the adapter is built from.
function loadServices() {
  const definition = protoLoader.loadSync(
    ['mpgs/gateway/v1/session_service.proto', 'mpgs/gateway/v1/payment_service.proto'],
    {
      includeDirs: [PROTO_ROOT],
      keepCase: true, // field names as the proto spells them: update_status, field_violations
      enums: String,
      longs: String,
      defaults: true,
    },
  );
  const v1 = grpc.loadPackageDefinition(definition).mpgs.gateway.v1;
  return { SessionService: v1.SessionService, PaymentService: v1.PaymentService };
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

// One unary call as a promise: { response, trailers } or { error, trailers }, never a rejection.
// grpc-js gives a successful call's trailers only through the call's 'status' event, which comes
// after the callback: the promise waits for both.
function call(client, rpc, request, metadata, deadlineMs = DEADLINE_MS) {
  return new Promise((resolve) => {
    let outcome = null;
    let trailers = null;
    const settle = () => {
      if (outcome && trailers) resolve({ ...outcome, trailers });
    };
    const pending = client[rpc](
      request,
      metadata,
      { deadline: Date.now() + deadlineMs },
      (error, response) => {
        outcome = error ? { error } : { response };
        settle();
      },
    );
    pending.on('status', (status) => {
      trailers = status.metadata;
      settle();
    });
  });
}

// What the adapter says about how it got the answer: 'reconciled', 'replayed' or '' (directly).
function toldOutcome(outcome) {
  const [value] = outcome.trailers ? outcome.trailers.get(OUTCOME_TRAILER) : [];
  return value === undefined ? '' : String(value);
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
const gatewayCode = (response) =>
  (response.response?.gateway_code ?? '(none)').replace(/^GATEWAY_CODE_/, '');
const transactionType = (detail) => (detail?.type ?? '(none)').replace(/^TRANSACTION_TYPE_/, '');
const orderStatus = (order) => (order?.status ?? '(none)').replace(/^ORDER_STATUS_/, '');
const maskedCard = (response) => response.source_of_funds?.provided?.card?.number || '(none)';
// The full card number anywhere in a message: field values, extra fields, nested or not.
const showsFullCard = (message) => JSON.stringify(message).includes(TEST_CARD);
const describeTransaction = (response) =>
  `transaction ${response.transaction?.id} ${transactionType(response.transaction)} ` +
  `${response.transaction?.amount} ${response.transaction?.currency}  ` +
  `${result(response)} ${gatewayCode(response)}  order ${orderStatus(response.order)}`;
const told = (outcome) => (outcome ? `  (${OUTCOME_TRAILER}: ${outcome})` : '');

// The card fields the payer's browser puts into the session through session.js: never the
// backend's job in production, where the backend never sees the card number.
function cardFields(expiryMonth, expiryYear) {
  return {
    'sourceOfFunds.provided.card.number': TEST_CARD,
    'sourceOfFunds.provided.card.expiry.month': expiryMonth,
    'sourceOfFunds.provided.card.expiry.year': expiryYear,
    'sourceOfFunds.provided.card.securityCode': TEST_SECURITY_CODE,
  };
}

// The payment, after the session flow: the card into the session, Pay with a lost answer, Pay
// again with the same ids, the order read back, and a refund the gateway refuses.
async function payFlow({ sessions, payments, root, metadata, merchant, expect, session, order }) {
  console.log('6. UpdateSession with the test card (what the browser does through session.js)');
  const carded = expect.succeeded(
    root,
    'UpdateSession',
    await call(
      sessions,
      'UpdateSession',
      { merchant, session: { id: session.id }, extra_fields: cardFields('01', '39') },
      metadata,
    ),
  );
  if (!carded) return;
  expect.that(result(carded) === 'SUCCESS', `result ${result(carded)}`);
  expect.that(!showsFullCard(carded), 'the answer never shows the full card number');

  console.log('7. RetrieveSession: the card is held, masked');
  const retrieved = expect.succeeded(
    root,
    'RetrieveSession',
    await call(
      sessions,
      'RetrieveSession',
      { merchant, correlation_id: 'node-example', session: { id: session.id } },
      metadata,
    ),
  );
  if (!retrieved) return;
  const held = retrieved.extra_fields;
  const number = held['sourceOfFunds.provided.card.number'];
  expect.that(number === MASKED_TEST_CARD, `card number ${number ?? '(none)'}`);
  expect.that(!showsFullCard(retrieved), 'the full card number shows nowhere');
  const securityCode = held['sourceOfFunds.provided.card.securityCode'];
  expect.that(
    securityCode === undefined || securityCode === 'xxx',
    `security code ${securityCode ?? '(absent)'}`,
  );
  expect.that(
    retrieved.session.version === carded.session.version,
    `version to pay with: ${retrieved.session.version}`,
  );

  // The transaction id is chosen before the first call and kept: it is what makes a retry safe.
  const request = {
    merchant,
    correlation_id: 'node-example',
    order: { ...order, reference: ANSWER_LOST },
    transaction: { id: 'pay-1' },
    session: { id: session.id, version: retrieved.session.version },
  };
  console.log(`8. Pay ${order.amount} ${order.currency}, reference ${ANSWER_LOST}: answer lost`);
  const first = await call(payments, 'Pay', request, metadata, PAY_DEADLINE_MS);
  const paid = expect.succeeded(root, 'Pay', first);
  if (!paid) return;
  console.log(`     ${describeTransaction(paid)}${told(toldOutcome(first))}`);
  expect.that(result(paid) === 'SUCCESS', `result ${result(paid)}`);
  expect.that(gatewayCode(paid) === 'APPROVED', `gateway code ${gatewayCode(paid)}`);
  expect.that(
    paid.transaction?.id === 'pay-1' && transactionType(paid.transaction) === 'PAYMENT',
    `transaction ${paid.transaction?.id} ${transactionType(paid.transaction)}`,
  );
  expect.that(
    sameAmount(paid.transaction?.amount ?? '', order.amount) &&
      paid.transaction?.currency === order.currency,
    `amount ${paid.transaction?.amount} ${paid.transaction?.currency} ` +
      `(asked ${order.amount} ${order.currency})`,
  );
  expect.that(
    maskedCard(paid) === MASKED_TEST_CARD && !showsFullCard(paid),
    `the card shows masked: ${maskedCard(paid)}`,
  );
  expect.that(
    toldOutcome(first) === 'reconciled',
    `the lost answer was found again: ${OUTCOME_TRAILER} ${toldOutcome(first) || '(none)'}`,
  );

  console.log('9. Pay again with the same ids: the same transaction, no second charge');
  const second = await call(payments, 'Pay', request, metadata, PAY_DEADLINE_MS);
  const again = expect.succeeded(root, 'Pay', second);
  if (!again) return;
  console.log(`     ${describeTransaction(again)}${told(toldOutcome(second))}`);
  expect.that(
    JSON.stringify(again.transaction) === JSON.stringify(paid.transaction),
    `the same transaction: ${again.transaction?.id} ${again.transaction?.amount}`,
  );
  expect.that(
    toldOutcome(second) === 'replayed',
    `answered from the gateway's record: ${OUTCOME_TRAILER} ${toldOutcome(second) || '(none)'}`,
  );

  console.log(`10. RetrieveOrder ${order.id}`);
  const orderHeld = expect.succeeded(
    root,
    'RetrieveOrder',
    await call(payments, 'RetrieveOrder', { merchant, order: { id: order.id } }, metadata),
  );
  if (!orderHeld) return;
  const kinds = orderHeld.transactions.map((each) => transactionType(each.transaction));
  console.log(`     order ${orderHeld.id} ${orderStatus(orderHeld)}  transactions ${kinds}`);
  expect.that(
    kinds.length === 1 &&
      kinds[0] === 'PAYMENT' &&
      orderHeld.transactions[0].transaction.id === 'pay-1',
    `one payment: ${kinds.join(', ') || '(no transaction)'}`,
  );
  expect.that(
    sameAmount(orderHeld.total_captured_amount, order.amount),
    `captured ${orderHeld.total_captured_amount || '(none)'} (paid ${order.amount})`,
  );

  const tooMuch = '999.00';
  console.log(`11. Refund ${tooMuch} ${order.currency}: more than was captured, refused`);
  const refund = await call(
    payments,
    'Refund',
    {
      merchant,
      correlation_id: 'node-example',
      order: { id: order.id },
      transaction: { id: 'refund-1', amount: tooMuch, currency: order.currency },
    },
    metadata,
    PAY_DEADLINE_MS,
  );
  if (expect.that(Boolean(refund.error), 'the call fails')) {
    const status = richStatus(root, refund.error);
    printDetails(status);
    const info = status.details['google.rpc.ErrorInfo'];
    const gatewayError = status.details['mpgs.gateway.v1.GatewayError'];
    expect.that(status.code === grpc.status.FAILED_PRECONDITION, `code ${codeName(status.code)}`);
    expect.that(
      info?.domain === 'nvp-adapter' && info?.reason === 'AMOUNT_EXCEEDS_BALANCE',
      `ErrorInfo ${info?.domain} ${info?.reason}`,
    );
    expect.that(
      gatewayError?.cause === 'ERROR_CAUSE_INVALID_REQUEST' &&
        gatewayError?.field === 'transaction.amount',
      `GatewayError ${gatewayError?.cause} ${gatewayError?.field}`,
    );
  } else {
    console.log(`     ${describeTransaction(refund.response)}`);
  }
}

// A declined card on a fresh session and order: an answer (OK, result FAILURE), not an error.
async function declineFlow({ sessions, payments, root, metadata, merchant, expect }) {
  const order = {
    amount: '5.00',
    currency: 'USD',
    id: `order-node-${crypto.randomBytes(4).toString('hex')}`,
  };
  console.log(`12. A card that declines (expiry 05/39): new session, order ${order.id}, Pay`);
  const created = expect.succeeded(
    root,
    'CreateSession',
    await call(sessions, 'CreateSession', { merchant }, metadata),
  );
  if (!created) return;
  const updated = expect.succeeded(
    root,
    'UpdateSession',
    await call(
      sessions,
      'UpdateSession',
      {
        merchant,
        session: { id: created.session.id, version: created.session.version },
        order,
        extra_fields: cardFields('05', '39'),
      },
      metadata,
    ),
  );
  if (!updated) return;
  const outcome = await call(
    payments,
    'Pay',
    {
      merchant,
      correlation_id: 'node-example',
      order,
      transaction: { id: 'pay-1' },
      session: { id: created.session.id, version: updated.session.version },
    },
    metadata,
    PAY_DEADLINE_MS,
  );
  const declined = expect.succeeded(root, 'Pay', outcome);
  if (!declined) return;
  console.log(`     ${describeTransaction(declined)}${told(toldOutcome(outcome))}`);
  expect.that(result(declined) === 'FAILURE', `result ${result(declined)}`);
  expect.that(gatewayCode(declined) === 'DECLINED', `gateway code ${gatewayCode(declined)}`);
  expect.that(!showsFullCard(declined), `the card shows masked: ${maskedCard(declined)}`);
}

async function main() {
  const options = parseCommandLine(process.argv.slice(2));
  const { SessionService, PaymentService } = loadServices();
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
  // The same channel, so the same connection and credentials.
  const payments = new PaymentService(options.target, credentials, {
    channelOverride: client.getChannel(),
  });
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

    await payFlow({ sessions: client, payments, root, metadata, merchant, expect, session, order });
    await declineFlow({ sessions: client, payments, root, metadata, merchant, expect });
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
