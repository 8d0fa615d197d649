# A plain program (no asyncoro in it) that discoro_client5.py runs on
# servers: for each line 'Line <k>' read from standard input it prints the
# line with the current time appended, after "computing" for a moment.
# At the end of its input it exits with the number of lines that were not
# of that form.
#
# By hand: printf 'Line 1\nLine 2\n' | python discoro_client5_proc.py

import random
import sys
import time

if __name__ == '__main__':
    bad = 0
    for line in sys.stdin:
        line = line.rstrip('\n')
        words = line.split()
        if len(words) != 2 or words[0] != 'Line' or not words[1].isdigit():
            bad += 1
            continue
        time.sleep(random.uniform(0, 0.3))
        print('%s - current time is %s' % (line, time.asctime()))
        sys.stdout.flush()
    sys.exit(bad)
