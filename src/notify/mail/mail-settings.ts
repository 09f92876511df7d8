import type { Settings } from '../../config/settings.js';

/**
 * How job mail leaves the host. Either an SMTP relay (GC_SMTP_URL, e.g.
 * `smtp://relay.example.org:25`, `smtps://user:pass@relay:465`) or, by default, the host's
 * MTA through the sendmail interface (GC_SENDMAIL, default /usr/sbin/sendmail).
 */
export interface MailSettings {
  /** SMTP relay URL; undefined: use the sendmail program. */
  smtpUrl: string | undefined;
  /** The sendmail-compatible program (`-i -f from -- rcpt...`). */
  sendmailPath: string;
  /** From: of every message. */
  from: string;
  /** Domain added to a bare user name (`-M alice`, or the job owner). */
  domain: string;
}

/** The mail settings of gcd's settings (GC_SMTP_URL, GC_SENDMAIL, GC_MAIL_FROM, GC_MAIL_DOMAIN). */
export function mailSettings(s: Pick<Settings, 'smtpUrl' | 'sendmailPath' | 'mailFrom' | 'mailDomain' | 'serverName'>): MailSettings {
  const domain = s.mailDomain ?? s.serverName;
  return { smtpUrl: s.smtpUrl, sendmailPath: s.sendmailPath, from: s.mailFrom ?? `copper@${domain}`, domain };
}
