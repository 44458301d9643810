// A city system calling Qiji from Node.js, as an integrator would: @grpc/grpc-js with
// @grpc/proto-loader loading the contracts from protos/ (the include root; protos/google holds
// the Google error-detail and API protos they import), protobufjs decoding the error trailer.
//
//   QIJI_IDENTITY_ADDRESS=127.0.0.1:50051 QIJI_TOKEN=<city admin token> node tests/node/client.mjs
//
// It builds an organisation tree (city › district › street, a platform and its station),
// registers a rider, reads the rider back, then sends a registration with several mistakes and
// decodes the `grpc-status-details-bin` trailer into google.rpc.Status, ErrorInfo and
// BadRequest. It prints one JSON document on stdout (tests/e2e/test_node_client.py reads it)
// and exits 0; any unexpected answer exits 1 with the error on stderr.
//
// Plaintext, as `make run` serves: grpc-js speaks HTTP/2 with prior knowledge. For a Qiji
// serving TLS, replace createInsecure() with grpc.credentials.createSsl(<the city's CA>).

import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const PROTOS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'protos');
const ADDRESS = process.env.QIJI_IDENTITY_ADDRESS || '127.0.0.1:50051';
const TOKEN = process.env.QIJI_TOKEN;
const DEADLINE_MS = 10_000;
// JSON-friendly forms, as the proto3 JSON mapping has them: int64 as a string, enums by their
// wire names (ORGANISATION_KIND_CITY), field names as in the .proto, unset fields as defaults.
const FORMS = { keepCase: true, longs: String, enums: String, defaults: true };

if (!TOKEN) {
  console.error('set QIJI_TOKEN to a city admin token (make run prints one)');
  process.exit(2);
}

const definition = protoLoader.loadSync('qiji/identity/v1/identity_service.proto', {
  ...FORMS,
  includeDirs: [PROTOS],
});
const { IdentityService } = grpc.loadPackageDefinition(definition).qiji.identity.v1;
const identity = new IdentityService(ADDRESS, grpc.credentials.createInsecure());

// The bearer token goes in the `authorization` metadata of every call.
const metadata = new grpc.Metadata();
metadata.set('authorization', `Bearer ${TOKEN}`);

function call(method, request) {
  return new Promise((resolve, reject) => {
    identity[method](request, metadata, { deadline: Date.now() + DEADLINE_MS },
      (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// The error details: google.rpc.Status from the trailer, each detail an Any whose type URL
// names its message (type.googleapis.com/google.rpc.ErrorInfo).
const rpcTypes = new protobuf.Root();
rpcTypes.resolvePath = (_origin, target) => path.join(PROTOS, target);
rpcTypes.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'],
  { keepCase: true });
const Status = rpcTypes.lookupType('google.rpc.Status');

function decodeDetails(error) {
  const [trailer] = error.metadata.get('grpc-status-details-bin');
  if (!trailer) return null;
  const status = Status.decode(trailer);
  const details = {};
  for (const any of status.details) {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpcTypes.lookupType(typeName);
    details[typeName] = type.toObject(type.decode(any.value), FORMS);
  }
  return { code: status.code, message: status.message, details };
}

// AIP-155: every create carries a request_id, so that a retry after a lost answer returns the
// first answer instead of making a second city. A UUID per intended create.
async function create(kind, name, parentId = '') {
  const { organisation } = await call('CreateOrganisation', {
    request_id: randomUUID(), kind, name, parent_id: parentId,
  });
  return organisation;
}

async function main() {
  // Which parent each kind may have: a district's is a city, a street's a district, a
  // station's a platform; a city and a platform stand alone.
  const city = await create('ORGANISATION_KIND_CITY', '常州市');
  const district = await create('ORGANISATION_KIND_DISTRICT', '钟楼区', city.organisation_id);
  const street = await create('ORGANISATION_KIND_STREET', '荷花池街道', district.organisation_id);
  const platform = await create('ORGANISATION_KIND_PLATFORM', '骑迹外卖');
  const station = await create('ORGANISATION_KIND_STATION', '荷花池站', platform.organisation_id);

  const registration = {
    request_id: randomUUID(),
    platform_id: platform.organisation_id,
    platform_rider_id: `NODE-${randomUUID().slice(0, 8)}`,
    name: '王小明',
    phone: `139${String(Date.now()).slice(-8)}`,
    national_id: '320402199003071235',
    home_street_id: street.organisation_id,
    station_id: station.organisation_id,
  };
  const registered = (await call('RegisterRider', registration)).rider;
  const read = (await call('GetRider', { rider_id: registered.rider_id })).rider;

  // A registration with mistakes: no name, a phone that is no mainland mobile number, a
  // national id that is no identity card number, and a district given as the home street.
  const bad = {
    ...registration,
    request_id: randomUUID(),
    platform_rider_id: `NODE-BAD-${randomUUID().slice(0, 8)}`,
    name: '',
    phone: '12345',
    national_id: '123',
    home_street_id: district.organisation_id,
  };
  let refused = null;
  try {
    await call('RegisterRider', bad);
  } catch (error) {
    refused = {
      grpc_code: error.code,
      grpc_code_name: grpc.status[error.code],
      details: error.details,
      status: decodeDetails(error),
    };
  }
  if (refused === null) throw new Error('the bad registration was accepted');

  return {
    address: ADDRESS,
    organisations: { city, district, street, platform, station },
    registration,
    registered,
    read,
    bad_request: bad,
    error: refused,
  };
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    identity.close();
  },
  (error) => {
    const decoded = error.metadata ? decodeDetails(error) : null;
    const said = decoded ? `\n${JSON.stringify(decoded, null, 2)}` : '';
    console.error(`client.mjs: ${error.message}${said}`);
    identity.close();
    process.exitCode = 1;
  },
);
