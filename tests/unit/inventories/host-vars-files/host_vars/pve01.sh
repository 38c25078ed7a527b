# covers: a file Ansible never loads (its name or place)
from_file: pve01-sh
