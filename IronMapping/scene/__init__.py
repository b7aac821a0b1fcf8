"""The bridge between IronMapping and a Slicer MRML scene. With ``IronMapping.py``, ``logic.py``,
``segment_statistics.py`` and ``sample_data.py`` it is the only code that uses Slicer, Qt or
MRML (``Testing/test_slicer_glue.py`` checks).

Reading
    :func:`read_multiecho` turns a volume sequence (MultiVolumeImporter's default), a legacy
    multi-frame volume (vtkMRMLMultiVolumeNode), the proxy volume of a sequence browser or a
    list of scalar volumes into a :class:`~IronMapping.image.MultiEchoImage`.
    Echo times come from, in this order: the caller, the ``MultiVolume.FrameLabels``
    attribute (when the frames are identified by EchoTime; sequence index values are frame
    numbers, not echo times), a sequence index named after the echo time, the DICOM
    database (tag EchoTime 0018,0081) through each volume's ``DICOM.instanceUIDs``.
    :func:`region_labels` resamples segments onto the echo grid.

Writing
    :func:`write_maps`, :func:`write_table` and :func:`write_plot` create or update output
    nodes named after the input ("<input> R2*", ...) that carry ``IronMapping.*`` attributes
    (quantity, unit, method, echo times, software version). Outputs are found again through
    a node reference to the input plus the ``IronMapping.Output`` attribute, so re-running
    updates them in place (names may be edited freely by the user).

:class:`SceneTransaction` removes every node added when something fails, so bad input leaves
the scene as it was.

Works with the full Slicer application and with the ``slicer-core`` wheel (plain Python):
``slicer.app``, ``slicer.modules`` and ``slicer.dicomDatabase`` are only used when present.

Modules: :mod:`.core` (scene, transactions, output nodes and attributes), :mod:`.inputs`
(reading the multi-echo input), :mod:`.segments` (segments to label arrays and back),
:mod:`.outputs` (maps, tables, plots), :mod:`.findings` (focal findings). Every name is
importable from ``IronMapping.scene`` itself.
"""

from __future__ import annotations

from .core import (ATTRIBUTE_PREFIX, INPUT_REFERENCE_ROLE, _slicer, mrml_scene, SceneTransaction,
                   _node_ids, nodes_by_class, _ijk_to_ras, find_output, outputs_of,
                   _get_or_create, _set_attributes, output_attributes, _place_in_hierarchy,
                   remove_outputs, volume_array, volume_geometry, node_by_id)  # noqa: F401
from .inputs import (ECHO_TIME_TAG, FIELD_STRENGTH_TAG, SCANNING_SEQUENCE_TAG, MANUFACTURER_TAG,
                     _database_value, dicom_value, _first_number, _instance_uids,
                     InputDescription, _sequence_of_proxy, _proxy_of_sequence,
                     _frame_label_echo_times, _frame_order, _index_echo_times, _dicom_echo_times,
                     dicom_file_value, _dicom_facts, describe_input, _attribute_echo_times,
                     _apply_dicom_facts, _describe_sequence, read_multiecho,
                     add_multiecho_sequence, _make_proxy)  # noqa: F401
from .segments import (Regions, segment_ids_of, segment_masks, region_labels, segment_terminology,
                       add_label_segmentation, import_labels)  # noqa: F401
from .outputs import (MAP_OUTPUTS, _colour_table, iron_colours, status_colours, _robust_range,
                      _quantity_names, write_maps, _display_map, _UNIT_IN_NAME, write_table,
                      _cell_text, table_rows, write_plot, r2star_map_for)  # noqa: F401
from .findings import (FOCAL_COLOURS, focal_colour, focal_segment_name, write_focal_findings)  # noqa: F401
