import { expect } from 'chai';
import { UsageError } from '../../src/errors.js';
import { extractDirectives, isExecutableLine, splitDirectiveWords } from '../../src/pbs/directives.js';

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(UsageError);
    return (err as Error).message;
  }
  throw new Error('expected a UsageError');
}

describe('pbs directives: extraction', () => {
  it('reads directives after the shebang, blank lines and comments, with line numbers', () => {
    const script = ['#!/bin/bash', '', '# a comment', '#PBS -N job1', '   #PBS -q workq', '#PBS -l walltime=1:00:00', 'echo hi'].join('\n');
    const scan = extractDirectives(script);
    expect(scan.directives).to.deep.equal([
      { line: 4, text: '#PBS -N job1', args: ['-N', 'job1'] },
      { line: 5, text: '#PBS -q workq', args: ['-q', 'workq'] },
      { line: 6, text: '#PBS -l walltime=1:00:00', args: ['-l', 'walltime=1:00:00'] },
    ]);
    expect(scan.ignored).to.deep.equal([]);
    expect(scan.firstCommandLine).to.equal(7);
  });

  it('takes several options on one line', () => {
    const scan = extractDirectives('#PBS -N a -q b -l ncpus=2 -j oe\n');
    expect(scan.directives[0]?.args).to.deep.equal(['-N', 'a', '-q', 'b', '-l', 'ncpus=2', '-j', 'oe']);
  });

  it('stops at the first executable line and lists later directives as ignored', () => {
    const scan = extractDirectives('#!/bin/sh\n#PBS -N a\ncd /tmp\n#PBS -N b\n  #PBS -q c\n');
    expect(scan.directives.map((d) => d.line)).to.deep.equal([2]);
    expect(scan.ignored).to.deep.equal([
      { line: 4, text: '#PBS -N b', args: [] },
      { line: 5, text: '#PBS -q c', args: [] },
    ]);
    expect(scan.firstCommandLine).to.equal(3);
  });

  it('treats a ":" line in column 1 as non-executable, like PBS', () => {
    const scan = extractDirectives(': old-style comment\n#PBS -N a\n');
    expect(scan.directives.map((d) => d.args)).to.deep.equal([['-N', 'a']]);
    expect(scan.firstCommandLine).to.equal(undefined);
  });

  it('does not take "#PBSX", "# PBS" or "#pbs" for directives', () => {
    const scan = extractDirectives('#PBSX -N a\n# PBS -N b\n#pbs -N c\n#PBS\n#PBS -N d\n');
    expect(scan.directives).to.deep.equal([{ line: 5, text: '#PBS -N d', args: ['-N', 'd'] }]);
  });

  it('strips the \\r of CRLF lines', () => {
    const scan = extractDirectives('#!/bin/bash\r\n#PBS -l walltime=01:00:00\r\necho\r\n');
    expect(scan.directives).to.deep.equal([{ line: 2, text: '#PBS -l walltime=01:00:00', args: ['-l', 'walltime=01:00:00'] }]);
    expect(scan.firstCommandLine).to.equal(3);
  });

  it('uses another prefix, and none at all for an empty one', () => {
    const script = '#MY -N a\n#PBS -N b\n';
    expect(extractDirectives(script, { prefix: '#MY' }).directives.map((d) => d.args)).to.deep.equal([['-N', 'a']]);
    expect(extractDirectives(script, { prefix: '' }).directives).to.deep.equal([]);
  });

  it('reports an unterminated quote with file, line and directive', () => {
    expect(usageError(() => extractDirectives('#!/bin/sh\n#PBS -N "abc\n', { fileName: 'job.sh' }))).to.equal('job.sh:2: #PBS -N "abc: unterminated " quote');
  });

  it('ignores quoting mistakes in directives PBS would ignore anyway', () => {
    expect(extractDirectives('echo\n#PBS -N "abc\n').ignored.map((d) => d.line)).to.deep.equal([2]);
  });
});

describe('pbs directives: word splitting', () => {
  it('splits on white space', () => expect(splitDirectiveWords(' -N  a\t-q b ')).to.deep.equal(['-N', 'a', '-q', 'b']));
  it('keeps double-quoted text together', () => expect(splitDirectiveWords('-N "a b" -v "X=1,Y=2"')).to.deep.equal(['-N', 'a b', '-v', 'X=1,Y=2']));
  it('keeps single-quoted text literally', () => expect(splitDirectiveWords(`-v 'A="x y"'`)).to.deep.equal(['-v', 'A="x y"']));
  it('joins quoted and bare parts of one word', () => expect(splitDirectiveWords(`-v A="x y",B='p q'`)).to.deep.equal(['-v', 'A=x y,B=p q']));
  it('honours backslash escapes', () => expect(splitDirectiveWords('-N a\\ b -v "Q=\\"q\\""')).to.deep.equal(['-N', 'a b', '-v', 'Q="q"']));
  it('drops a trailing comment', () => expect(splitDirectiveWords(' -l walltime=1:00:00   # one hour')).to.deep.equal(['-l', 'walltime=1:00:00']));
  it('keeps a "#" inside a word', () => expect(splitDirectiveWords('-N run#2')).to.deep.equal(['-N', 'run#2']));
  it('keeps an empty quoted word', () => expect(splitDirectiveWords('-C ""')).to.deep.equal(['-C', '']));
  it('reports an unterminated quote', () => expect(usageError(() => splitDirectiveWords("-N 'x"))).to.equal("unterminated ' quote"));
});

describe('pbs directives: executable lines', () => {
  const cases: [string, boolean][] = [
    ['echo hi', true],
    ['  ./a.out', true],
    ['', false],
    ['   ', false],
    ['# comment', false],
    ['   #PBS -N x', false],
    ['#!/bin/bash', false],
    [': comment', false],
    [' : indented colon is a command', true],
  ];
  for (const [line, executable] of cases) {
    it(`${JSON.stringify(line)} is ${executable ? '' : 'not '}executable`, () => expect(isExecutableLine(line)).to.equal(executable));
  }
});
