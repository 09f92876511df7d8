import { expect } from 'chai';
import { UsageError } from '../../src/errors.js';
import {
  MAX_ARRAY_TASKS,
  formatSize,
  formatWalltime,
  parseArrayList,
  parseArrayRange,
  parsePbsDateTime,
  parseSize,
  parseWalltime,
} from '../../src/pbs/units.js';

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('pbs units: walltime', () => {
  const cases: [string, number][] = [
    ['01:30:00', 5400],
    ['1:2:3', 3723],
    ['90:00', 5400],
    ['45', 45],
    ['3600', 3600],
    ['168:00:00', 604800],
    ['00:00:01', 1],
    ['1:00:00.5', 3601],
    ['0:30.0', 30],
  ];
  for (const [text, seconds] of cases) {
    it(`parses ${text} as ${seconds} s`, () => expect(parseWalltime(text)).to.equal(seconds));
  }

  it('refuses malformed durations with the option named', () => {
    expect(usageError(() => parseWalltime('1:75:00', '-l walltime'))).to.equal('-l walltime: "1:75:00" has minutes or seconds above 59');
    expect(usageError(() => parseWalltime('10:60'))).to.equal('walltime: "10:60" has minutes or seconds above 59');
    expect(usageError(() => parseWalltime('1h'))).to.equal('walltime: "1h" is not a duration; use [[HH:]MM:]SS, e.g. 01:30:00');
    expect(usageError(() => parseWalltime('1:2:3:4'))).to.equal('walltime: "1:2:3:4" is not a duration; use [[HH:]MM:]SS, e.g. 01:30:00');
    expect(usageError(() => parseWalltime(''))).to.equal('walltime: "" is not a duration; use [[HH:]MM:]SS, e.g. 01:30:00');
    expect(usageError(() => parseWalltime('00:00:00'))).to.equal('walltime: "00:00:00" must be more than 0 seconds');
    expect(usageError(() => parseWalltime('99999999999999999999'))).to.equal('walltime: "99999999999999999999" is too long');
  });

  it('formats seconds as HH:MM:SS, hours past 99 included', () => {
    expect(formatWalltime(0)).to.equal('00:00:00');
    expect(formatWalltime(5400)).to.equal('01:30:00');
    expect(formatWalltime(3723)).to.equal('01:02:03');
    expect(formatWalltime(360000)).to.equal('100:00:00');
  });
});

describe('pbs units: sizes', () => {
  const cases: [string, number][] = [
    ['8gb', 8192],
    ['8GB', 8192],
    ['512mb', 512],
    ['1024kb', 1],
    ['100kb', 1],
    ['2g', 2048],
    ['1tb', 1048576],
    ['1073741824', 1024],
    ['1073741825', 1025],
    ['128mw', 1024],
    ['1kw', 1],
    ['3b', 1],
  ];
  for (const [text, mib] of cases) {
    it(`parses ${text} as ${mib} MiB`, () => expect(parseSize(text)).to.equal(mib));
  }

  it('refuses malformed sizes', () => {
    expect(usageError(() => parseSize('1.5gb', '-l mem'))).to.equal('-l mem: "1.5gb" has a fraction; use a smaller unit, e.g. 1536mb');
    expect(usageError(() => parseSize('8 gb'))).to.equal('mem: "8 gb" is not a size; use e.g. 8gb, 512mb or 1024kb');
    expect(usageError(() => parseSize('8xb'))).to.equal('mem: "8xb" is not a size; use e.g. 8gb, 512mb or 1024kb');
    expect(usageError(() => parseSize('0gb'))).to.equal('mem: "0gb" must be more than 0');
    expect(usageError(() => parseSize('99999999999999999999'))).to.equal('mem: "99999999999999999999" is too large');
  });

  it('formats MiB with the largest exact unit', () => {
    expect(formatSize(8192)).to.equal('8gb');
    expect(formatSize(1536)).to.equal('1536mb');
    expect(formatSize(1048576)).to.equal('1tb');
    expect(formatSize(1)).to.equal('1mb');
  });
});

describe('pbs units: -a date-time', () => {
  // 13 June 2024 10:00:00 local time (the rule is about local wall-clock time).
  const now = new Date(2024, 5, 13, 10, 0, 0).getTime();
  const local = (y: number, mo: number, d: number, h: number, mi: number, s = 0): number => new Date(y, mo - 1, d, h, mi, s).getTime();

  it('hhmm later today stays today', () => expect(parsePbsDateTime('2330', now)).to.equal(local(2024, 6, 13, 23, 30)));
  it('hhmm already past today means tomorrow', () => expect(parsePbsDateTime('0930', now)).to.equal(local(2024, 6, 14, 9, 30)));
  it('hhmm equal to now means tomorrow', () => expect(parsePbsDateTime('1000', now)).to.equal(local(2024, 6, 14, 10, 0)));
  it('takes seconds after a dot', () => expect(parsePbsDateTime('2330.45', now)).to.equal(local(2024, 6, 13, 23, 30, 45)));
  it('DDhhmm later this month', () => expect(parsePbsDateTime('151200', now)).to.equal(local(2024, 6, 15, 12, 0)));
  it('DDhhmm already past means next month', () => expect(parsePbsDateTime('101200', now)).to.equal(local(2024, 7, 10, 12, 0)));
  it('a day this month lacks moves to the next month that has it', () => expect(parsePbsDateTime('311200', now)).to.equal(local(2024, 7, 31, 12, 0)));
  it('MMDDhhmm already past means next year', () => expect(parsePbsDateTime('01151200', now)).to.equal(local(2025, 1, 15, 12, 0)));
  it('29 February without a year finds the next leap year', () => expect(parsePbsDateTime('02291200', now)).to.equal(local(2028, 2, 29, 12, 0)));
  it('YYMMDDhhmm uses the current century', () => expect(parsePbsDateTime('2412241800', now)).to.equal(local(2024, 12, 24, 18, 0)));
  it('CCYYMMDDhhmm.SS is taken as given', () => expect(parsePbsDateTime('202501311830.15', now)).to.equal(local(2025, 1, 31, 18, 30, 15)));
  it('a fully given date in the past is kept (eligible at once)', () => expect(parsePbsDateTime('202001011200', now)).to.equal(local(2020, 1, 1, 12, 0)));

  it('refuses malformed date-times', () => {
    expect(usageError(() => parsePbsDateTime('2360', now))).to.equal('-a: "2360" has minutes above 59');
    expect(usageError(() => parsePbsDateTime('2400', now))).to.equal('-a: "2400" has an hour above 23');
    expect(usageError(() => parsePbsDateTime('13151200', now))).to.equal('-a: "13151200" has a month outside 01-12');
    expect(usageError(() => parsePbsDateTime('321200', now))).to.equal('-a: "321200" has a day outside 01-31');
    expect(usageError(() => parsePbsDateTime('2330.61', now))).to.equal('-a: "2330.61" has seconds above 59');
    expect(usageError(() => parsePbsDateTime('202502301200', now))).to.equal('-a: "202502301200" names a day that does not exist (30/02)');
    expect(usageError(() => parsePbsDateTime('930', now))).to.equal('-a: "930" is not a date-time; use [[[[CC]YY]MM]DD]hhmm[.SS], e.g. 202501311830');
    expect(usageError(() => parsePbsDateTime('tomorrow', now))).to.equal('-a: "tomorrow" is not a date-time; use [[[[CC]YY]MM]DD]hhmm[.SS], e.g. 202501311830');
  });
});

describe('pbs units: array ranges', () => {
  it('-J X-Y', () => expect(parseArrayRange('1-5')).to.deep.equal({ indices: [1, 2, 3, 4, 5] }));
  it('-J X-Y:Z', () => expect(parseArrayRange('1-10:3')).to.deep.equal({ indices: [1, 4, 7, 10] }));
  it('-J X-Y:Z%max', () => expect(parseArrayRange('0-40:10%2')).to.deep.equal({ indices: [0, 10, 20, 30, 40], max: 2 }));
  it('-J accepts exactly the task limit', () => expect(parseArrayRange(`1-${MAX_ARRAY_TASKS}`).indices).to.have.length(MAX_ARRAY_TASKS));

  it('-J refuses malformed ranges', () => {
    expect(usageError(() => parseArrayRange('5-1'))).to.equal('-J: "5-1" has end 1 not above start 5');
    expect(usageError(() => parseArrayRange('5-5'))).to.equal('-J: "5-5" has end 5 not above start 5');
    expect(usageError(() => parseArrayRange('1-10:0'))).to.equal('-J: "1-10:0" has step 0; the step must be at least 1');
    expect(usageError(() => parseArrayRange('1-10:-2'))).to.equal('-J: "1-10:-2" has step -2; the step must be at least 1');
    expect(usageError(() => parseArrayRange('1-10%0'))).to.equal('-J: "1-10%0" has %max below 1');
    expect(usageError(() => parseArrayRange('1-10%x'))).to.equal('-J: "1-10%x" has a malformed %max; use e.g. %10');
    expect(usageError(() => parseArrayRange('7'))).to.equal('-J: "7" is not an index range; use X-Y[:Z][%max], e.g. 1-100:2%10');
    expect(usageError(() => parseArrayRange('a-b'))).to.equal('-J: "a-b" is not an index range; use X-Y[:Z][%max], e.g. 1-100:2%10');
    expect(usageError(() => parseArrayRange('1,2'))).to.equal('-J: "1,2" is not an index range; use X-Y[:Z][%max], e.g. 1-100:2%10');
    expect(usageError(() => parseArrayRange('0-100000'))).to.equal('-J: "0-100000" has 100001 indices; at most 100000 are allowed');
    expect(usageError(() => parseArrayRange('1-99999999999999999999'))).to.equal('-J: "1-99999999999999999999" has an index that is too large');
  });

  it('-t ranges with %max (Torque)', () => expect(parseArrayList('1-10%6')).to.deep.equal({ indices: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], max: 6 }));
  it('-t lists, sorted and without duplicates', () => expect(parseArrayList('7,1,3,5-7')).to.deep.equal({ indices: [1, 3, 5, 6, 7] }));
  it('-t a single index', () => expect(parseArrayList('5')).to.deep.equal({ indices: [5] }));
  it('-t a one-index range', () => expect(parseArrayList('5-5')).to.deep.equal({ indices: [5] }));

  it('-t refuses malformed lists', () => {
    expect(usageError(() => parseArrayList('7-3'))).to.equal('-t: "7-3" has end 3 below start 7');
    expect(usageError(() => parseArrayList('1,,3'))).to.equal('-t: "1,,3" is not an index range; use X-Y[,X-Y...][%max] or a list, e.g. 1,3,5-7%2');
    expect(usageError(() => parseArrayList('%4'))).to.equal('-t: "%4" is empty; use e.g. 1-10 or 1,3,5-7');
    expect(usageError(() => parseArrayList('1-60000,70000-130000'))).to.equal('-t: "1-60000,70000-130000" has 120001 indices; at most 100000 are allowed');
  });
});
