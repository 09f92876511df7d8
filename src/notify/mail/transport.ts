import nodemailer from 'nodemailer';
import type { MailSettings } from './mail-settings.js';

/** One message, ready to go. */
export interface OutgoingMail {
  from: string;
  to: string[];
  subject: string;
  text: string;
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
  return {
    send: async (m) => {
      await transporter.sendMail({ from: m.from, to: m.to, subject: m.subject, text: m.text });
    },
    close: () => transporter.close(),
  };
}
