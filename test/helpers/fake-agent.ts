import { createServer, type Server, type Socket } from 'node:net';

export interface AgentRequest {
  execute: string;
  arguments?: Record<string, unknown>;
}

/** What a scripted agent does with one request (sync requests are answered for it). */
export type AgentScript = (req: AgentRequest, reply: (body: unknown) => void, sock: Socket) => void;

/**
 * A guest agent on a real Unix socket, scripted by the test: it answers
 * guest-sync-delimited honestly (0xFF + the id) so the client gets going, and hands every
 * other request to `script`, which may answer, lie, flood or stay silent.
 */
export async function scriptedAgent(path: string, script: AgentScript): Promise<{ srv: Server; requests: AgentRequest[]; close(): Promise<void> }> {
  const requests: AgentRequest[] = [];
  const socks = new Set<Socket>();
  const srv = createServer((s: Socket) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => undefined); // the client may cut a flood short
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const ff = buf.indexOf(0xff);
        const nl = buf.indexOf(0x0a);
        if (ff >= 0 && (nl < 0 || ff < nl)) {
          buf = buf.subarray(ff + 1);
          continue;
        }
        if (nl < 0) break;
        const req = JSON.parse(buf.subarray(0, nl).toString('utf8')) as AgentRequest;
        buf = buf.subarray(nl + 1);
        requests.push(req);
        const reply = (body: unknown): void => {
          if (!s.destroyed) s.write(JSON.stringify(body) + '\n');
        };
        if (req.execute === 'guest-sync-delimited') {
          s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: req.arguments?.id }) + '\n')]));
        } else {
          script(req, reply, s);
        }
      }
    });
  });
  await new Promise<void>((r) => srv.listen(path, () => r()));
  return {
    srv,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of socks) s.destroy();
        srv.close(() => r());
      }),
  };
}

/** Write `total` bytes of `byte` to the socket in 1 MiB pieces, honouring backpressure; resolves with what was written. */
export async function flood(sock: Socket, total: number, byte = 0x61): Promise<number> {
  const piece = Buffer.alloc(1024 * 1024, byte);
  let sent = 0;
  while (sent < total && !sock.destroyed) {
    const ok = sock.write(piece);
    sent += piece.length;
    if (!ok) {
      await new Promise<void>((r) => {
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          r();
        };
        sock.once('drain', done);
        sock.once('close', done);
      });
    }
  }
  return sent;
}
