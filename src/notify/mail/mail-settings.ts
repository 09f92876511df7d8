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

export function loadMailSettings(env: NodeJS.ProcessEnv, serverName: string): MailSettings {
  const domain = env.GC_MAIL_DOMAIN || serverName;
  return {
    smtpUrl: env.GC_SMTP_URL || undefined,
    sendmailPath: env.GC_SENDMAIL || '/usr/sbin/sendmail',
    from: env.GC_MAIL_FROM || `copper@${domain}`,
    domain,
  };
}
