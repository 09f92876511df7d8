/**
 * A real SMTP server in its own process, for tests: listens on 127.0.0.1 (port from argv[2],
 * 0 = any free one), prints `listening <port>`, then one JSON line per message received
 * ({ from, to, data }). SMTP_DELAY_MS holds every message's reply that long (a slow relay).
 */
import { SMTPServer } from 'smtp-server';

const delayMs = Number(process.env.SMTP_DELAY_MS ?? 0);
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  onData(stream, session, callback) {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const record = {
        from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
        to: session.envelope.rcptTo.map((r) => r.address),
        data: Buffer.concat(chunks).toString('utf8'),
      };
      setTimeout(() => {
        process.stdout.write(`${JSON.stringify(record)}\n`);
        callback();
      }, delayMs);
    });
  },
});
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  const addr = server.server.address();
  process.stdout.write(`listening ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
