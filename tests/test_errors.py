"""run_cli: a user's mistake is one line and exit 2; a closed pipe is no traceback."""
import subprocess
import sys

from cephalometric.errors import UserError, run_cli


def test_user_error_is_one_line_and_status_2(capsys):
    def main(argv):
        raise UserError('the thing is wrong; do this instead')
    assert run_cli(main, []) == 2
    assert capsys.readouterr().err == 'error: the thing is wrong; do this instead\n'


def test_output_into_a_closed_pipe_ends_quietly():
    program = ('import sys\nfrom cephalometric.errors import run_cli\n'
               'def main(argv):\n    for i in range(200000):\n        print("line", i)\n'
               'sys.exit(run_cli(main))\n')
    reader = 'import sys; sys.stdin.readline()'   # reads one line, then closes the pipe
    writer = subprocess.Popen([sys.executable, '-c', program], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    subprocess.run([sys.executable, '-c', reader], stdin=writer.stdout, check=True)
    writer.stdout.close()
    stderr = writer.stderr.read().decode()
    assert writer.wait() == 141
    assert 'Traceback' not in stderr and stderr == ''
