"""training — the "four times" curriculum (四时课程): courses, sessions, attendance, results and
pre-job certification (岗前培训)."""
