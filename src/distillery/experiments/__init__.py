"""Experiments that turn the field's central claims into commands anyone can re-run
(``distillery experiment NAME``): ``filter-lift``, ``collapse``, ``star``, registered under
kind ``experiment``. Each writes a JSON file and a plot under its output folder."""
