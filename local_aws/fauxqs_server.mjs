// fauxqs on loopback only: its CLI and startFauxqs() bind 0.0.0.0.
// Usage: node fauxqs_server.mjs PORT
import { buildApp } from "fauxqs";

const port = Number(process.argv[2]);
const app = buildApp({ logger: false });
await app.listen({ host: "127.0.0.1", port });
const stop = async () => { await app.close(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
