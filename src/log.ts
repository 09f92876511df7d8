import winston from 'winston';
import { settingProblem, settings } from './config/settings.js';

/** One logger for the daemon; tools print to the terminal directly instead. */
export const log: winston.Logger = winston.createLogger({
  level: settingProblem() ? 'info' : settings().logLevel, // a bad setting is reported by the tool or gcd itself
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
