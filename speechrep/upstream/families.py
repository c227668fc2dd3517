"""Imports every upstream family module so that their registrations run; add new families here."""
