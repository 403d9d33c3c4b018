// The local SQS: fauxqs (its `buildApp`, because its `startFauxqs` always listens on 0.0.0.0) on 127.0.0.1
// only, its state kept on disk when a data folder is given, and a fault switch for `txoutbox fault sqs ...`:
//   allow: normal; deny: every SQS call answers AccessDenied, as AWS does when the IAM role is denied;
//   down: every connection is dropped without an answer, as with a broker that is gone.
// Usage: node sqs_server.mjs <path to node_modules/fauxqs> <port> [<data folder>]
//
// With a data folder, fauxqs's SQLite persistence writes every mutation through (queues, messages ready,
// delayed and in flight, FIFO sequence counters), so a SIGKILL loses nothing it acknowledged. fauxqs keeps
// its FIFO deduplication ids in memory only; they are kept here, in dedup.db next to its database, so that a
// relay re-sending after a restart is deduplicated within the 5 minutes, as on AWS.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { pathToFileURL } from "node:url";

const [fauxqsDir, portArg, dataDir] = process.argv.slice(2);
const load = (file) => import(pathToFileURL(join(fauxqsDir, "dist", file)).href);
const { buildApp } = await load("app.js");
const { SqsStore, SqsQueue } = await load("sqs/sqsStore.js");
const { SnsStore } = await load("sns/snsStore.js");
const { S3Store } = await load("s3/s3Store.js");
const { PersistenceManager } = await load("persistence.js");

const DEDUP_WINDOW_MS = 5 * 60 * 1000; // SQS FIFO's deduplication interval
const stores = { sqsStore: new SqsStore(), snsStore: new SnsStore(), s3Store: new S3Store() };
let persistence;
let dedup;

if (dataDir) {
  // fauxqs 2.4.1 writes NULL into a message's NOT NULL receive count when ChangeMessageVisibility(0) makes
  // it visible again: the call fails with HTTP 500 and the message drops out of memory (`txoutbox dlq list`
  // does exactly this). Clear only the in-flight fields; the receive count stays, as on AWS.
  PersistenceManager.prototype.updateMessageReady = function (messageId) {
    this.readyStatement ??= this.db.prepare(
      "UPDATE sqs_messages SET receipt_handle = NULL, visibility_deadline = NULL WHERE message_id = ?",
    );
    this.readyStatement.run(messageId);
  };
  mkdirSync(dataDir, { recursive: true });
  // The same wiring as fauxqs's startFauxqs: load first, then attach, so that loading writes nothing back.
  persistence = new PersistenceManager(dataDir);
  persistence.load(stores.sqsStore, stores.snsStore, stores.s3Store);
  for (const store of Object.values(stores)) store.persistence = persistence;
  for (const queue of stores.sqsStore.allQueues()) queue.persistence = persistence;

  dedup = new DatabaseSync(join(dataDir, "dedup.db"));
  dedup.exec("PRAGMA journal_mode = WAL");
  // Survives a SIGKILL like fauxqs's own writes; skipping the fsync per message halves the cost of keeping
  // the ids (a power cut could forget the last ones: the consumer's inbox still handles each event once).
  dedup.exec("PRAGMA synchronous = NORMAL");
  dedup.exec(
    "CREATE TABLE IF NOT EXISTS dedup (queue TEXT NOT NULL, dedup_id TEXT NOT NULL, message_id TEXT NOT NULL, " +
      "sequence_number TEXT, recorded_at INTEGER NOT NULL, PRIMARY KEY (queue, dedup_id))",
  );
  const prune = dedup.prepare("DELETE FROM dedup WHERE recorded_at < ?");
  prune.run(Date.now() - DEDUP_WINDOW_MS);
  for (const row of dedup.prepare("SELECT * FROM dedup").all()) {
    const queue = stores.sqsStore.allQueues().find((q) => q.name === row.queue);
    if (!queue) continue;
    queue.deduplicationCache.set(row.dedup_id, {
      messageId: row.message_id,
      sequenceNumber: row.sequence_number ?? undefined,
    });
    // toad-cache's FifoMap dates an entry from its insertion: give it back its original expiry.
    queue.deduplicationCache.items.get(row.dedup_id).expiry = row.recorded_at + DEDUP_WINDOW_MS;
  }
  const record = dedup.prepare("INSERT OR REPLACE INTO dedup VALUES (?, ?, ?, ?, ?)");
  const original = SqsQueue.prototype.recordDeduplication;
  SqsQueue.prototype.recordDeduplication = function (dedupId, messageId, sequenceNumber) {
    original.call(this, dedupId, messageId, sequenceNumber);
    record.run(this.name, dedupId, messageId, sequenceNumber ?? null, Date.now());
  };
  setInterval(() => prune.run(Date.now() - DEDUP_WINDOW_MS), 60_000).unref();
}

const app = buildApp({ logger: false, stores });
let mode = "allow";

const ACCESS_DENIED = JSON.stringify({
  __type: "com.amazon.coral.service#AccessDeniedException",
  message:
    "User: arn:aws:sts::000000000000:assumed-role/txoutbox-local/relay is not authorized to perform this " +
    "SQS action because an explicit deny in an identity-based policy denies it (local fault: deny)",
});

app.addHook("onRequest", (request, reply, done) => {
  if (request.url.startsWith("/_devstack/")) return done();
  if (mode === "down") {
    request.raw.socket.destroy();
    return;
  }
  if (mode === "deny") {
    reply
      .code(400)
      .header("content-type", "application/x-amz-json-1.0")
      .header("x-amzn-query-error", "AccessDenied;Sender")
      .send(ACCESS_DENIED);
    return;
  }
  done();
});

app.get("/_devstack/fault", async () => ({ mode }));
// Only a JSON body flips the switch: a browser cannot send one cross-site without a CORS preflight (which
// is never granted here), so a web page cannot take the local SQS down with a form POST.
app.post("/_devstack/fault", async (request, reply) => {
  const type = String(request.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/json") {
    reply.code(415);
    return { error: "send a JSON body with Content-Type: application/json, e.g. {\"mode\": \"deny\"}" };
  }
  let wanted;
  try {
    // fauxqs drops Fastify's JSON parser (its catch-all parser hands every other body over as bytes)
    wanted = JSON.parse(Buffer.isBuffer(request.body) ? request.body.toString("utf8") : "null")?.mode;
  } catch {
    wanted = undefined;
  }
  if (!["allow", "deny", "down"].includes(wanted)) {
    reply.code(400);
    return { error: `mode must be allow, deny or down, got ${JSON.stringify(wanted ?? null)}` };
  }
  mode = wanted;
  return { mode };
});

const shutdown = async () => {
  await app.close(); // closes fauxqs's database too (its preClose hook is ours below)
  process.exit(0);
};
app.addHook("preClose", (done) => {
  persistence?.close();
  dedup?.close();
  done();
});
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

try {
  await app.listen({ port: Number(portArg), host: "127.0.0.1" });
} catch (err) {
  console.error(`fauxqs could not listen on 127.0.0.1:${portArg}: ${err.code ?? err.message}`);
  process.exit(3);
}
console.log(
  `fauxqs listening on http://127.0.0.1:${app.server.address().port}` +
    (dataDir ? `, state kept in ${dataDir}` : ", state in memory"),
);
