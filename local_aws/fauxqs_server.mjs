// fauxqs on loopback only: its CLI and startFauxqs() bind 0.0.0.0.
// Usage: node fauxqs_server.mjs PORT_FILE
// It binds port 0 and writes "PORT\n" to PORT_FILE once listening (local_aws/server_process.py).
import { writeFileSync } from "node:fs";
import { buildApp } from "fauxqs";

const portFile = process.argv[2];
const app = buildApp({ logger: false });
await app.listen({ host: "127.0.0.1", port: 0 });
writeFileSync(portFile, `${app.server.address().port}\n`);
const stop = async () => { await app.close(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
