"""The notebook run (nbval) uses complete copies of the notebooks: each student notebook followed by its
worked solutions (``helpers.classroom``), with every exercise cell marked to print "not yet done".
They are written to ``build/nbval/`` when pytest starts, before it looks for tests there."""
from helpers.classroom import BUILD, write_complete

write_complete(BUILD / "nbval", mark_exercises=True)
