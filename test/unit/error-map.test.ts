import { expect } from 'chai';
import { errorBody, errorFromBody, exitCodeOf, httpStatusOf } from '../../src/api/error-map.js';
import { PayloadTooLargeError } from '../../src/api/http-util.js';
import { parseQuotaText } from '../../src/config/quotas.js';
import { UsageTracker, checkSubmit } from '../../src/scheduler/policy.js';
import {
  CopperError, DriverError, NotFoundError, PermissionError, QuotaError, StateError, UnavailableError, UnknownJobError, UsageError,
} from '../../src/errors.js';

/** The one edge table: what a user sees of each error as an exit status and an HTTP status. */
describe('errors at the edge: exit statuses and HTTP statuses', () => {
  it('maps each error to the status the tools and the API have always used', () => {
    const rows: Array<[Error, number, number]> = [
      [new UsageError('x'), 2, 400],
      [new UnknownJobError('1.srv'), 153, 404],
      [new PermissionError('x'), 159, 403],
      [new QuotaError('x'), 38, 409],
      [new StateError('x'), 1, 409],
      [new NotFoundError('x'), 1, 404],
      [new UnavailableError('x'), 3, 503],
      [new DriverError('x'), 1, 500],
      [new PayloadTooLargeError('x'), 1, 413],
      [new CopperError('x'), 1, 500],
      [new Error('x'), 1, 500],
    ];
    for (const [e, exit, http] of rows) {
      expect([e.constructor.name, exitCodeOf(e), httpStatusOf(e)]).to.deep.equal([e.constructor.name, exit, http]);
    }
  });

  it('an answer body has one line, the code and a quota refusal\'s fields; a client gets the typed error back', () => {
    const q = new QuotaError('over\nsecond line', { limit: 'max_queued', max: 2, entity: 'user bob', amount: 1, used: 2 });
    const body = errorBody(q);
    expect(body).to.deep.equal({ error: 'over', code: 'EQUOTA', fields: q.fields });
    const back = errorFromBody(JSON.parse(JSON.stringify(body)) as object, 'fallback');
    expect(back).to.be.instanceOf(QuotaError);
    expect((back as QuotaError).fields).to.deep.equal(q.fields);
    expect(errorFromBody({ error: 'Unknown Job Id 7.srv', code: 'ENOJOB' }, '')).to.be.instanceOf(UnknownJobError).and.have.property('jobId', '7.srv');
    expect(errorFromBody({ code: 'EWHAT' }, 'gcd answered HTTP 500').message).to.equal('gcd answered HTTP 500');
  });
});

describe('quota refusals carry fields, not just a message', () => {
  const refusal = (fn: () => unknown): QuotaError => {
    try {
      fn();
    } catch (e) {
      expect(e).to.be.instanceOf(QuotaError);
      return e as QuotaError;
    }
    throw new Error('expected a QuotaError');
  };

  it('max_queued and per-job limits name the limit, the entity and the amounts', () => {
    const cfg = parseQuotaText('users:\n  alice: {max_queued: 2, max_job_ncpus: 4}\n', 'quotas.yaml');
    const t = new UsageTracker();
    t.onQueued({ user: 'alice', group: 'g', queue: 'workq', ncpus: 1, memMiB: 0 }, 2);
    const req = { user: 'alice', group: 'g', queue: 'workq', ncpus: 1, memMiB: 0 };
    expect(refusal(() => checkSubmit(cfg, t, req)).fields).to.deep.equal({ limit: 'max_queued', max: 2, entity: 'user alice', amount: 1, used: 2 });
    expect(refusal(() => checkSubmit(cfg, new UsageTracker(), { ...req, ncpus: 6 })).fields).to.deep.equal({
      limit: 'max_job_ncpus', max: 4, entity: 'user alice', amount: 6,
    });
  });
});
