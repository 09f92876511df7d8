import type { CapacityLimits } from '../scheduler/capacity.js';
import { largestHost, type NodeRecord, type NodeRegistry } from './registry.js';

/**
 * This gcd's latest look at the grid's hosts, refreshed on each heartbeat (and each failure
 * monitor tick on the server): what placement and the submission's largest-host check read
 * without a Redis round trip on their path.
 */
export class GridView {
  private nodes: readonly NodeRecord[] = [];

  constructor(private readonly registry: NodeRegistry) {}

  async refresh(): Promise<readonly NodeRecord[]> {
    this.nodes = await this.registry.list();
    return this.nodes;
  }

  all(): readonly NodeRecord[] {
    return this.nodes;
  }

  get(name: string): NodeRecord | undefined {
    return this.nodes.find((n) => n.name === name);
  }

  /** Per resource, the most a live host offers; undefined until some host is live. */
  largest(): CapacityLimits | undefined {
    return largestHost(this.nodes);
  }
}
