// A real WeCom SDK (wechat-enterprise-api, unchanged) with its base URL pointed at the broker
// for every call, gettoken included (issue 15, SPEC §8's drop-ins). Run by
// tests/integration/sdk_test.cpp:
//
//   BROKER_URL=http://127.0.0.1:PORT WECOM_CORPID=… WECOM_SECRET=… WECOM_AGENTID=… \
//   WECOM_USERID=… node tests/sdk/check.js
//
// Exits 0 when the SDK got a token, read the user and sent a message; otherwise non-zero with
// the reason. Neither the secret nor a token is ever printed: SDK and HTTP errors can carry the
// URL they called, so their query strings are cut before printing.
'use strict';

function fail(message) {
  console.error(`sdk check: ${message}`);
  process.exit(1);
}

let API;
try {
  API = require('wechat-enterprise-api');
} catch (error) {
  console.error('sdk check: the SDK is not installed: run `npm ci --prefix tests/sdk`');
  process.exit(2);
}

const settings = {};
const names = ['BROKER_URL', 'WECOM_CORPID', 'WECOM_SECRET', 'WECOM_AGENTID', 'WECOM_USERID'];
for (const name of names) {
  if (!process.env[name]) fail(`${name} is not set`);
  settings[name] = process.env[name];
}

// A hung call must fail the check, not stall the test.
setTimeout(() => fail('no answer within 8 s'), 8000).unref();

const withoutQuery = (text) => String(text).replace(/\?\S*/g, '?…');
const described = (error) =>
  `${error.name}${error.code ? ` ${error.code}` : ''}: ${withoutQuery(error.message)}`;

// The SDK's calls take a callback; each step here awaits one.
const call = (method, ...args) =>
  new Promise((resolve, reject) => {
    method.call(api, ...args, (error, data) => (error ? reject(error) : resolve(data)));
  });

const api = new API(settings.WECOM_CORPID, settings.WECOM_SECRET, Number(settings.WECOM_AGENTID));
// The SDK builds every URL, gettoken's too, from this public property of its client.
api.prefix = `${settings.BROKER_URL}/cgi-bin/`;
api.setOpts({ timeout: 5000 });

async function main() {
  const token = await call(api.getLatestToken);
  if (typeof token?.accessToken !== 'string' || token.accessToken.length === 0) {
    fail('gettoken answered no access_token');
  }
  console.log('gettoken: a token');

  const user = await call(api.getUser, settings.WECOM_USERID);
  if (user.errcode !== 0) fail(`user/get answered errcode ${user.errcode}`);
  if (user.userid !== settings.WECOM_USERID) {
    fail(`user/get answered userid ${JSON.stringify(user.userid)}, not the one asked`);
  }
  console.log('user/get: errcode 0, the userid asked');

  const sent = await call(api.send, { touser: settings.WECOM_USERID }, {
    msgtype: 'text',
    text: { content: 'token-broker gateway: a message sent by an unchanged SDK' },
  });
  if (sent.errcode !== 0) fail(`message/send answered errcode ${sent.errcode}`);
  console.log('message/send: errcode 0');
}

main().then(
  () => process.exit(0),
  (error) => fail(described(error)),
);
