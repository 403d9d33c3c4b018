// Starts the fauxqs SQS emulator on 127.0.0.1 only (its own CLI always binds 0.0.0.0), with a fault switch
// used by `txoutbox fault sqs ...`:
//   allow: normal; deny: every SQS call answers AccessDenied, as AWS does when the IAM role is denied;
//   down: every connection is dropped without an answer, as with a broker that is gone.
// Usage: node fauxqs_launcher.mjs <path to node_modules/fauxqs> <port>
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [fauxqsDir, portArg] = process.argv.slice(2);
const { buildApp } = await import(pathToFileURL(join(fauxqsDir, "dist", "app.js")).href);

const app = buildApp({ logger: false });
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
app.post("/_devstack/fault", async (request, reply) => {
  const wanted = request.query.mode;
  if (!["allow", "deny", "down"].includes(wanted)) {
    reply.code(400);
    return { error: `mode must be allow, deny or down, got ${JSON.stringify(wanted)}` };
  }
  mode = wanted;
  return { mode };
});

const shutdown = async () => {
  await app.close();
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

try {
  await app.listen({ port: Number(portArg), host: "127.0.0.1" });
} catch (err) {
  console.error(`fauxqs could not listen on 127.0.0.1:${portArg}: ${err.code ?? err.message}`);
  process.exit(3);
}
console.log(`fauxqs listening on http://127.0.0.1:${app.server.address().port}`);
