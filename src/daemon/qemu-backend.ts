import type { Settings } from '../config/settings.js';
import type { ChannelServer } from '../api/channels.js';
import type { Backend } from './backend.js';
import { DriverError } from '../errors.js';

export async function qemuBackend(_settings: Settings, _channels: ChannelServer): Promise<Backend> {
  throw new DriverError('the QEMU backend is being wired in');
}
