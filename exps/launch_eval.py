''''true
# exps/launch_eval.py -- the function-space diffusion code's name of launch_eval.sh, for its README's
# command lines (from exps/: bash launch_eval.py sbgm <experiment name>/<id> --mode=generate).
# Run with bash, it says so in one line and runs launch_eval.sh with the same arguments.
#
# The file is bash and Python at once, so that `python launch_eval.py ...` ends in one line saying
# what to type rather than a SyntaxError: bash reads line 1 as the command `true` (four empty quotes
# glued to it), Python as the start of a string that runs to the three quotes below; bash never gets
# there (exec), and its parser (bash -n) sees the Python part as a here-document.
echo "launch_eval.py: note: launch_eval.py is launch_eval.sh here; running bash ${0%.py}.sh $*" >&2
exec bash "$(dirname "$0")/launch_eval.sh" "$@"
: <<'END_OF_PYTHON'
'''
import shlex
import sys

script = sys.argv[0][:-3] + ".sh" if sys.argv[0].endswith(".py") else "launch_eval.sh"
typed = shlex.join([script, *sys.argv[1:]])
print(f"launch_eval.py: error: this is a bash script (launch_eval.sh here): type bash {typed}", file=sys.stderr)
sys.exit(2)
END_OF_PYTHON
