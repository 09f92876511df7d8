import winston from 'winston';

/** One logger for the daemon; tools print to the terminal directly instead. */
export const log: winston.Logger = winston.createLogger({
  level: process.env.GC_LOG_LEVEL ?? 'info',
  format: winston.format.combine(
    winston.format.timestamp(),
    winston.format.printf((i) => {
      const { level, message, timestamp, ...rest } = i;
      const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
      return `${String(timestamp)} ${level} ${String(message)}${extra}`;
    }),
  ),
  transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] })],
});
