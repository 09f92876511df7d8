import { access, constants } from 'node:fs/promises';
import nodemailer from 'nodemailer';
import { CopperError, errorMessage } from '../../errors.js';
import type { MailSettings } from './mail-settings.js';

/** One message, ready to go. */
export interface OutgoingMail {
  from: string;
  to: string[];
  subject: string;
  text: string;
}

/** A message that could not leave the host: which route, and why. */
export class MailSendError extends CopperError {
  override readonly code = 'EMAIL';
  constructor(
    readonly route: string,
    why: string,
  ) {
    super(`${route}: ${why}`);
  }
}

/** Something that delivers a message or rejects with why it could not. */
export interface MailTransport {
  send(mail: OutgoingMail): Promise<void>;
  close(): void;
}

/**
 * nodemailer over the configured route: an SMTP relay (pooled, so a burst of job ends shares
 * a few connections) or the host MTA's sendmail program (`sendmail -i -f <from> -- <rcpt>...`).
 * Timeouts are short: a dead relay must fail a message in seconds, not hold it for minutes.
 * The URL's scheme was checked with the other settings (GC_SMTP_URL in config/settings.ts).
 */
export function createMailTransport(s: MailSettings): MailTransport {
  const transporter = s.smtpUrl
    ? nodemailer.createTransport({
        pool: true,
        url: s.smtpUrl,
        maxConnections: 4,
        connectionTimeout: 15_000,
        greetingTimeout: 15_000,
        socketTimeout: 60_000,
      })
    : nodemailer.createTransport({ sendmail: true, path: s.sendmailPath, newline: 'unix' });
  const route = s.smtpUrl ? `SMTP relay ${new URL(s.smtpUrl).host}` : s.sendmailPath;
  return {
    send: async (m) => {
      // Without a relay and without an MTA, say how to configure one rather than "spawn ENOENT".
      if (
        !s.smtpUrl &&
        !(await access(s.sendmailPath, constants.X_OK).then(
          () => true,
          () => false,
        ))
      ) {
        throw new MailSendError(route, 'no such program; install an MTA or set GC_SMTP_URL / GC_SENDMAIL');
      }
      try {
        await transporter.sendMail({ from: m.from, to: m.to, subject: m.subject, text: m.text });
      } catch (e) {
        throw new MailSendError(route, errorMessage(e));
      }
    },
    close: () => transporter.close(),
  };
}
